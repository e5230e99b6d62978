package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// sent is an incident and the webhook's 202 for it.
type sent struct {
	inc schemas.Incident
	acc accepted
}

// checkZeroLoss proves that every accepted incident is stored, applied once and audited once.
func checkZeroLoss(t *testing.T, ctx context.Context, js jetstream.JetStream, all []sent, fig *figures) {
	t.Helper()
	n := names.WithDefaults()
	start := time.Now()

	// The log: every 202 names a sequence that holds that incident.
	var (
		stored map[uint64]string
		byID   map[string]int
	)
	err := scan(ctx, js, n.IncidentStream, func() { stored, byID = map[uint64]string{}, map[string]int{} }, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		var inc struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Data(), &inc); err != nil {
			return fmt.Errorf("seq %d: %w", meta.Sequence.Stream, err)
		}
		stored[meta.Sequence.Stream] = inc.ID
		byID[inc.ID]++
		return nil
	})
	if err != nil {
		t.Fatalf("read the incident stream: %v", err)
	}

	// The state: every entity of every accepted incident has its block, created by that
	// sequence.
	kv, err := js.KeyValue(ctx, n.BlocksBucket)
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]schemas.Block{}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	for loaded := false; !loaded; {
		select {
		case e := <-w.Updates():
			if e == nil {
				loaded = true
				break
			}
			var b schemas.Block
			if err := json.Unmarshal(e.Value(), &b); err != nil {
				t.Fatalf("block %s: %v", e.Key(), err)
			}
			blocks[e.Key()] = b
		case <-time.After(time.Minute):
			t.Fatalf("reading the bucket: no entry for 60s after %d", len(blocks))
		}
	}
	_ = w.Stop()

	// The audit trail: one "accepted" per stored incident, one "blocked" per key.
	var (
		blocked    map[string]int
		acceptedBy map[uint64]int
		appliedRec map[uint64]schemas.AuditRecord
		actions    map[schemas.Action]int
	)
	err = scan(ctx, js, n.AuditStream, func() {
		blocked, acceptedBy = map[string]int{}, map[uint64]int{}
		appliedRec, actions = map[uint64]schemas.AuditRecord{}, map[schemas.Action]int{}
	}, func(m jetstream.Msg) error {
		var rec schemas.AuditRecord
		if err := json.Unmarshal(m.Data(), &rec); err != nil {
			return err
		}
		actions[rec.Action]++
		switch rec.Action {
		case schemas.ActionBlocked:
			blocked[rec.BlockKey]++
		case schemas.ActionAccepted:
			acceptedBy[rec.EventSeq]++
			appliedRec[rec.EventSeq] = rec
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the audit stream: %v", err)
	}

	var lost, unapplied, twice, wrongSeq, duplicates int
	keys := 0
	report := func(counter *int, format string, a ...any) {
		if *counter < 10 {
			t.Errorf(format, a...)
		}
		*counter++
	}
	for _, s := range all {
		if s.acc.Seq == 0 {
			report(&lost, "%s: no 202 recorded", s.inc.ID)
			continue
		}
		if stored[s.acc.Seq] != s.inc.ID {
			report(&lost, "%s: 202 with seq %d, but the stream holds %q there", s.inc.ID, s.acc.Seq, stored[s.acc.Seq])
			continue
		}
		if byID[s.inc.ID] > 1 {
			report(&duplicates, "%s: stored %d times (deduplication missed a retry)", s.inc.ID, byID[s.inc.ID])
		}
		if acceptedBy[s.acc.Seq] != 1 {
			report(&twice, "%s (seq %d): %d accepted audit records, want 1", s.inc.ID, s.acc.Seq, acceptedBy[s.acc.Seq])
		}
		for _, e := range s.inc.Entities {
			key, err := consumer.KeyFor(e, s.inc.Scope)
			if err != nil {
				t.Fatalf("key for %+v: %v", e, err)
			}
			keys++
			b, ok := blocks[key]
			switch {
			case !ok:
				report(&unapplied, "%s (seq %d): no block under %s", s.inc.ID, s.acc.Seq, key)
			case b.CreatedSeq != s.acc.Seq || b.IncidentID != s.inc.ID:
				report(&wrongSeq, "%s (seq %d): block %s was created by seq %d, incident %s", s.inc.ID, s.acc.Seq, key, b.CreatedSeq, b.IncidentID)
			}
			if blocked[key] != 1 {
				report(&twice, "%s: %d blocked audit records for %s, want 1", s.inc.ID, blocked[key], key)
			}
		}
	}
	applyDelays(fig, all, appliedRec)
	fig.note("zero-loss check: %d incidents accepted, %d keys; %d stored in the stream, %d blocks in the bucket; audit: %v",
		len(all), keys, len(stored), len(blocks), actions)
	fig.note("lost %d, not applied %d, block from another sequence %d, audited twice %d, stored twice %d",
		lost, unapplied, wrongSeq, twice, duplicates)
	fig.add("zero-loss check (read stream, bucket and audit trail)", time.Since(start))
}

// ingestAround reports the webhooks around a shutdown: the slowest 202 among the requests in
// flight at that moment, and per replica the first 202 to a request sent after it.
func ingestAround(fig *figures, ev *event, res []accepted) {
	var inFlight, slowest time.Duration
	first := map[int]time.Time{}
	for _, r := range res {
		if r.Seq == 0 {
			continue
		}
		if r.sent.Before(ev.at) && r.at.After(ev.at) {
			inFlight++
			slowest = max(slowest, r.at.Sub(r.sent))
		}
		if r.sent.After(ev.at) && (first[r.via].IsZero() || r.at.Before(first[r.via])) {
			first[r.via] = r.at
		}
	}
	fig.note("failover %d: %d requests in flight at the shutdown were answered 202, the slowest after %.3fs",
		ev.k, inFlight, slowest.Seconds())
	for via := range 2 {
		at := "none"
		if !first[via].IsZero() {
			at = fmt.Sprintf("%.3fs", first[via].Sub(ev.at).Seconds())
		}
		fig.note("failover %d: replica %c: first 202 to a request sent after the shutdown, %s after it", ev.k, 'a'+via, at)
	}
	var gap time.Duration
	var at []time.Time
	for _, r := range res {
		if r.Seq != 0 {
			at = append(at, r.at)
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(at); i++ {
		if at[i].After(ev.at) && at[i-1].Before(ev.at.Add(10*time.Second)) {
			gap = max(gap, at[i].Sub(at[i-1]))
		}
	}
	fig.add(fmt.Sprintf("failover %d: longest time without any 202 in the 10s after the shutdown", ev.k), gap)
}

// applyDelays reports how long after its 202 each incident was applied (its "accepted" audit
// record is written with its blocks), and the slowest.
func applyDelays(fig *figures, all []sent, applied map[uint64]schemas.AuditRecord) {
	type delay struct {
		d   time.Duration
		s   sent
		rec schemas.AuditRecord
	}
	var ds []delay
	for _, s := range all {
		if rec, ok := applied[s.acc.Seq]; ok && s.acc.Seq != 0 {
			ds = append(ds, delay{rec.Time.Sub(s.acc.at), s, rec})
		}
	}
	if len(ds) == 0 {
		return
	}
	slices.SortFunc(ds, func(a, b delay) int { return cmp.Compare(a.d, b.d) })
	q := func(f float64) float64 { return ds[int(f*float64(len(ds)-1))].d.Seconds() }
	over := 0
	for _, d := range ds {
		if d.d > 5*time.Second {
			over++
		}
	}
	fig.note("202 → applied: median %.3fs, p99 %.3fs, max %.3fs; %d incidents applied more than 5s after their 202",
		q(0.5), q(0.99), q(1), over)
	for _, d := range ds[max(0, len(ds)-min(over, 5)):] {
		fig.note("  slow: %s seq %d, 202 from replica %c at %s, applied by %s at %s (%.3fs later)",
			d.s.inc.ID, d.s.acc.Seq, 'a'+d.s.acc.via, d.s.acc.at.Format("15:04:05.000"), d.rec.Actor,
			d.rec.Time.Local().Format("15:04:05.000"), d.d.Seconds())
	}
}

// scan reads a stream from its start with broker.Scan, which retries the pulls a forming or
// failing-over cluster leaves unanswered (no responders); reset prepares what fn fills.
func scan(ctx context.Context, js jetstream.JetStream, stream string, reset func(), fn func(jetstream.Msg) error) error {
	reset()
	return broker.Scan(ctx, js, stream, jetstream.OrderedConsumerConfig{}, func(m jetstream.Msg, _, _ uint64) error { return fn(m) })
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// figures collects what the run measured, printed at the end (go test -v shows it), each
// line prefixed "FIGURES cluster: " as the other scenarios' figures are.
type figures struct {
	mode  string
	mu    sync.Mutex
	lines []string
}

func (f *figures) add(what string, d time.Duration) {
	f.note("%-72s %8.3fs", what, d.Seconds())
}

func (f *figures) note(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, fmt.Sprintf(format, a...))
}

func (f *figures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Every line carries the FIGURES prefix: `make soak` keeps only the lines that do.
	const prefix = "FIGURES cluster: "
	return fmt.Sprintf(prefix+"cluster scenario (%s):\n"+prefix+"  %s", f.mode, strings.Join(f.lines, "\n"+prefix+"  "))
}
