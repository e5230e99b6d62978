package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// stallLimit is how long the consumer may show no progress at all before a wait gives up. It
// is longer than the consumer's AckWait (30 s): deliveries in hand when a process died are
// redelivered only once their AckWait has passed, and nothing moves meanwhile.
const stallLimit = 90 * time.Second

// reader reads a system's NATS back, as an operator's tools would.
type reader struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func newReader(t *testing.T, url string) *reader {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &reader{nc: nc, js: js}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// lastSeq is the incident stream's last sequence.
func (r *reader) lastSeq(t *testing.T) uint64 {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	s, err := r.js.Stream(ctx, broker.DefaultIncidentStream)
	if err != nil {
		t.Fatalf("look up the incident stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitConsumed waits until the durable consumer "blockwire" has acknowledged everything up to
// seq and holds nothing, and returns how long that took. It gives up only when the consumer's
// state has not changed for stallLimit, so a slow machine makes it slower, never wrong.
func (r *reader) waitConsumed(t *testing.T, seq uint64) time.Duration {
	t.Helper()
	start := time.Now()
	type progress struct{ floor, delivered, pending, ackPending, redelivered uint64 }
	var (
		last    progress
		moved   = time.Now()
		lastErr error
	)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cons, err := r.js.Consumer(ctx, broker.DefaultIncidentStream, "blockwire")
		var ci *jetstream.ConsumerInfo
		if err == nil {
			ci, err = cons.Info(ctx)
		}
		cancel()
		if err == nil {
			if ci.AckFloor.Stream >= seq && ci.NumAckPending == 0 && ci.NumPending == 0 {
				return time.Since(start)
			}
			p := progress{ci.AckFloor.Stream, ci.Delivered.Stream, ci.NumPending, uint64(ci.NumAckPending), uint64(ci.NumRedelivered)}
			if p != last {
				last, moved = p, time.Now()
			}
			err = fmt.Errorf("ack floor %d of %d, delivered %d, %d pending, %d awaiting ack, %d redelivered",
				p.floor, seq, p.delivered, p.pending, p.ackPending, p.redelivered)
		}
		lastErr = err
		if time.Since(moved) > stallLimit {
			t.Fatalf("the consumer made no progress for %s: %v", stallLimit, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stored is one message of the incident stream.
type stored struct {
	seq uint64
	id  string
	at  time.Time // when JetStream stored it
}

// incidents reads the whole incident stream.
func (r *reader) incidents(t *testing.T) []stored {
	t.Helper()
	var out []stored
	err := broker.Scan(ctxFor(t, 5*time.Minute), r.js, broker.DefaultIncidentStream, jetstream.OrderedConsumerConfig{},
		func(m jetstream.Msg, _, _ uint64) error {
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			var inc struct{ ID string }
			if err := json.Unmarshal(m.Data(), &inc); err != nil {
				return fmt.Errorf("incident at seq %d: %w", meta.Sequence.Stream, err)
			}
			out = append(out, stored{seq: meta.Sequence.Stream, id: inc.ID, at: meta.Timestamp})
			return nil
		})
	if err != nil {
		t.Fatalf("read the incident stream: %v", err)
	}
	return out
}

// audit reads the whole audit trail.
func (r *reader) audit(t *testing.T) []schemas.AuditRecord {
	t.Helper()
	var out []schemas.AuditRecord
	err := broker.Scan(ctxFor(t, 5*time.Minute), r.js, broker.DefaultAuditStream, jetstream.OrderedConsumerConfig{},
		func(m jetstream.Msg, _, _ uint64) error {
			var rec schemas.AuditRecord
			if err := json.Unmarshal(m.Data(), &rec); err != nil {
				return fmt.Errorf("audit record %q: %w", m.Data(), err)
			}
			out = append(out, rec)
			return nil
		})
	if err != nil {
		t.Fatalf("read the audit trail: %v", err)
	}
	return out
}

// blocks reads every block in the bucket.
func (r *reader) blocks(t *testing.T) map[string]schemas.Block {
	t.Helper()
	ctx := ctxFor(t, 5*time.Minute)
	kv, err := r.js.KeyValue(ctx, broker.DefaultBlocksBucket)
	if err != nil {
		t.Fatalf("bind the bucket: %v", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatalf("watch the bucket: %v", err)
	}
	defer func() { _ = w.Stop() }()
	out := make(map[string]schemas.Block)
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return out
			}
			var b schemas.Block
			if err := json.Unmarshal(e.Value(), &b); err != nil {
				t.Fatalf("block %s: %v", e.Key(), err)
			}
			out[e.Key()] = b
		case <-ctx.Done():
			t.Fatalf("read the bucket: %v after %d keys", ctx.Err(), len(out))
		}
	}
}

// expect is an incident that was answered 202: it must be in the log at seq and applied.
type expect struct {
	id   string
	seq  uint64
	keys []string
}

func expectations(b *burst, seqs map[int]uint64) []expect {
	out := make([]expect, 0, len(seqs))
	for _, i := range slices.Sorted(maps.Keys(seqs)) {
		out = append(out, expect{id: b.incidents[i].ID, seq: seqs[i], keys: b.keys[i]})
	}
	return out
}

// state is everything the system holds at the end of a scenario.
type state struct {
	stored []stored
	audit  []schemas.AuditRecord
	blocks map[string]schemas.Block
}

func (r *reader) state(t *testing.T) state {
	t.Helper()
	return state{stored: r.incidents(t), audit: r.audit(t), blocks: r.blocks(t)}
}

// actions counts the audit records by action, e.g. "accepted 1200, blocked 2400".
func (s state) actions() string {
	n := map[schemas.Action]int{}
	for _, rec := range s.audit {
		n[rec.Action]++
	}
	var parts []string
	for _, a := range slices.Sorted(maps.Keys(n)) {
		parts = append(parts, fmt.Sprintf("%s %d", a, n[a]))
	}
	return strings.Join(parts, ", ")
}

// lag is how long the stored incidents waited to be applied: from the time JetStream stored
// each one to the time of its last audit record (the records are written after the block,
// and a redelivery that finds its own records in place adds none), the largest, and how many
// waited longer than slow.
func (s state) lag(slow time.Duration) (worst time.Duration, slower int) {
	at := make(map[uint64]time.Time, len(s.stored))
	for _, rec := range s.audit {
		if rec.EventSeq != 0 && rec.Time.After(at[rec.EventSeq]) {
			at[rec.EventSeq] = rec.Time
		}
	}
	for _, m := range s.stored {
		a, ok := at[m.seq]
		if !ok {
			continue
		}
		d := a.Sub(m.at)
		worst = max(worst, d)
		if d > slow {
			slower++
		}
	}
	return worst, slower
}

// check asserts that nothing accepted was lost and nothing was applied twice:
//   - the log holds each incident id once, and every expected incident at the sequence its 202 gave;
//   - each stored incident has exactly one `accepted` record, for its own sequence;
//   - every key an expected incident asked for is in the bucket, created and last written by
//     that incident (createdSeq = updatedSeq = its sequence), with exactly one `blocked` record
//     and no `extended` one: every incident here names its own entities, so any second write
//     would be a second application;
//   - nothing was refused or dead-lettered.
func (s state) check(t *testing.T, want []expect) {
	t.Helper()
	const show = 10 // failures named; the count says how many more
	if failures := s.problems(want); len(failures) > 0 {
		t.Errorf("%d failures (audit: %s), the first ones:\n  %s", len(failures), s.actions(),
			strings.Join(failures[:min(show, len(failures))], "\n  "))
	}
}

// problems is what check reports, sorted.
func (s state) problems(want []expect) []string {
	var failures []string
	fail := func(format string, a ...any) {
		failures = append(failures, fmt.Sprintf(format, a...))
	}

	bySeq := make(map[uint64]stored, len(s.stored))
	seqsOf := make(map[string][]uint64, len(s.stored))
	for _, m := range s.stored {
		bySeq[m.seq] = m
		seqsOf[m.id] = append(seqsOf[m.id], m.seq)
	}
	for id, seqs := range seqsOf {
		if len(seqs) > 1 {
			fail("incident %s is stored %d times, at %v", id, len(seqs), seqs)
		}
	}
	accepted := map[string][]uint64{}
	blocked := map[string][]uint64{}
	extended := map[string][]uint64{}
	for _, rec := range s.audit {
		switch rec.Action {
		case schemas.ActionAccepted:
			accepted[rec.IncidentID] = append(accepted[rec.IncidentID], rec.EventSeq)
		case schemas.ActionBlocked:
			blocked[rec.BlockKey] = append(blocked[rec.BlockKey], rec.EventSeq)
		case schemas.ActionExtended:
			extended[rec.BlockKey] = append(extended[rec.BlockKey], rec.EventSeq)
		case schemas.ActionRefused, schemas.ActionDeadLetter:
			fail("audit: %s %s of incident %s (seq %d): %s", rec.Action, rec.BlockKey, rec.IncidentID, rec.EventSeq, rec.Detail)
		}
	}
	for id, seqs := range accepted {
		if len(seqs) != 1 {
			fail("incident %s has %d accepted records (event seqs %v), want 1", id, len(seqs), seqs)
		}
	}
	for _, m := range s.stored {
		if got := accepted[m.id]; len(got) == 0 || got[0] != m.seq {
			fail("stored incident %s (seq %d) has accepted records for seqs %v", m.id, m.seq, got)
		}
	}
	for key, seqs := range blocked {
		if len(seqs) != 1 {
			fail("key %s has %d blocked records (event seqs %v), want 1", key, len(seqs), seqs)
		}
	}
	for key, seqs := range extended {
		fail("key %s has extended records (event seqs %v): applied more than once", key, seqs)
	}

	for _, w := range want {
		m, ok := bySeq[w.seq]
		switch {
		case !ok:
			fail("incident %s was answered 202 with seq %d, which is not in the stream", w.id, w.seq)
			continue
		case m.id != w.id:
			fail("incident %s was answered 202 with seq %d, which holds incident %s", w.id, w.seq, m.id)
			continue
		}
		for _, key := range w.keys {
			b, ok := s.blocks[key]
			switch {
			case !ok:
				fail("incident %s (seq %d): key %s is not in the bucket", w.id, w.seq, key)
			case b.CreatedSeq != w.seq || b.UpdatedSeq != w.seq || len(b.IncidentIDs) != 1:
				fail("incident %s (seq %d): key %s has createdSeq %d, updatedSeq %d, incidents %v: written by another event",
					w.id, w.seq, key, b.CreatedSeq, b.UpdatedSeq, b.IncidentIDs)
			}
			if got := blocked[key]; len(got) != 1 || got[0] != w.seq {
				fail("incident %s (seq %d): key %s has blocked records for seqs %v, want exactly [%d]", w.id, w.seq, key, got, w.seq)
			}
		}
	}
	slices.Sort(failures)
	return failures
}
