package consumer

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// TestRandomBytesAreDeadLettered: garbage published straight to the subject
// lands in the dead letters with its reason and origin, and the pipeline
// carries on with the next incident.
func TestRandomBytesAreDeadLettered(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	garbage := make([]byte, 512)
	_, _ = rand.Read(garbage)
	bad := r.publishRaw("noname.incidents.rogue", garbage, "")
	good := r.publish(r.incident([]schemas.Entity{{Type: "ip", Value: "192.0.2.80"}}, nil))
	r.waitApplied(good)
	if r.block(mustKey(t, schemas.KeyParts{Kind: "ip", Value: "192.0.2.80"})) == nil {
		t.Fatal("the incident after the garbage was not applied")
	}
	s, err := r.js.Stream(t.Context(), r.names.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), r.names.DLQSubject+"."+DLQInvalid)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if string(m.Data) != string(garbage) || m.Header.Get(HeaderDLQOriginalSeq) != strconv.FormatUint(bad, 10) ||
		m.Header.Get(HeaderDLQReason) != DLQInvalid || m.Header.Get(HeaderDLQOriginalSubject) != "noname.incidents.rogue" {
		t.Fatalf("dead letter %v with headers %v", len(m.Data), m.Header)
	}
	if recs := auditFor(r.audits(), bad); len(recs) != 1 || recs[0].Action != schemas.ActionDeadLetter {
		t.Fatalf("audit %+v, want one dead_letter", recs)
	}
}

// TestRedeliveryAfterCrash: a process that wrote the block (and maybe some
// audit records) but died before the ack leaves work a redelivery must
// finish without doing anything twice.
func TestRedeliveryAfterCrash(t *testing.T) {
	tests := []struct {
		name  string
		crash func(ctx context.Context, c *Consumer, seq uint64, inc schemas.Incident) error
	}{
		{"after the KV write, before the audit", func(ctx context.Context, c *Consumer, seq uint64, inc schemas.Incident) error {
			tgt, err := translate(inc.Entities[0], nil)
			if err != nil {
				return err
			}
			_, err = c.store.block(ctx, tgt, event{seq: seq, incident: &inc, source: schemas.SourceWebhook, at: time.Now(), expiresAt: time.Now().Add(time.Hour)})
			return err
		}},
		{"after the audit, before the ack", func(ctx context.Context, c *Consumer, seq uint64, inc schemas.Incident) error {
			data := mustJSON(t, inc)
			return c.process(ctx, natsMsg("x", nil).Header, data, seq, time.Now())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			inc := r.incident([]schemas.Entity{{Type: "ip", Value: "192.0.2.90"}}, nil)
			seq := r.publish(inc)
			crashed := r.newConsumer(nil)
			if err := tt.crash(t.Context(), crashed, seq, inc); err != nil {
				t.Fatal(err)
			}
			r.run(r.newConsumer(nil))
			r.waitApplied(seq)
			if n := len(r.keys()); n != 1 {
				t.Fatalf("%d keys, want 1", n)
			}
			counts := actionCounts(auditFor(r.audits(), seq))
			if counts[schemas.ActionBlocked] != 1 || len(counts) != 1 {
				t.Fatalf("audit actions %v, want exactly one blocked", counts)
			}
		})
	}
}

// TestTwoConsumersInParallel: two processes share the durable consumer over
// 5,000 incidents that hit overlapping keys; every block exists once, every
// incident is remembered, and each key has exactly one `blocked` record.
func TestTwoConsumersInParallel(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 incidents")
	}
	r := newRig(t)
	r.run(r.newConsumer(nil))
	r.run(r.newConsumer(nil))
	const incidents, addresses = 5000, 1000
	var last uint64
	futures := make([]jetstream.PubAckFuture, 0, incidents)
	for i := range incidents {
		inc := schemas.Incident{ID: fmt.Sprintf("par-%d", i), Type: schemas.TypeBlock,
			Entities: []schemas.Entity{{Type: "ip", Value: fmt.Sprintf("198.18.%d.%d", (i%addresses)/256, (i%addresses)%256)}}}
		m := natsMsg("noname.incidents.webhook", mustJSON(t, inc))
		f, err := r.js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish timed out")
		}
	}
	r.waitApplied(last)
	keys := r.keys()
	if len(keys) != addresses {
		t.Fatalf("%d keys, want %d", len(keys), addresses)
	}
	for _, k := range keys[:50] {
		if b := r.block(k); len(b.IncidentIDs) != incidents/addresses {
			t.Fatalf("%s remembers %d incidents, want %d", k, len(b.IncidentIDs), incidents/addresses)
		}
	}
	blocked := map[string]int{}
	for _, rec := range r.audits() {
		if rec.Action == schemas.ActionBlocked {
			blocked[rec.BlockKey]++
		}
	}
	if len(blocked) != addresses {
		t.Fatalf("%d keys have a blocked record, want %d", len(blocked), addresses)
	}
	for k, n := range blocked {
		if n != 1 {
			t.Fatalf("%s has %d blocked records, want 1", k, n)
		}
	}
}

// TestExpiryIsAuditedOnce: when the server's TTL removes a block, one
// `expired` record is written, whatever the number of replicas.
func TestExpiryIsAuditedOnce(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	r.run(r.newConsumer(nil))
	key := mustKey(t, schemas.KeyParts{Kind: "ip", Value: "192.0.2.99"})
	r.waitApplied(r.publish(r.incident([]schemas.Entity{{Type: "ip", Value: "192.0.2.99"}}, func(i *schemas.Incident) { i.DurationSeconds = dur(1) })))
	eventually(t, 15*time.Second, func() error {
		for _, rec := range r.audits() {
			if rec.Action == schemas.ActionExpired && rec.BlockKey == key {
				return nil
			}
		}
		return fmt.Errorf("no expired record for %s", key)
	})
	if b := r.block(key); b != nil {
		t.Fatalf("expired block still in the bucket: %+v", b)
	}
	time.Sleep(500 * time.Millisecond) // a second replica's duplicate would have landed by now
	if n := actionCounts(r.audits())[schemas.ActionExpired]; n != 1 {
		t.Fatalf("%d expired records, want 1", n)
	}
}

// TestUnblockIsNotReportedAsExpiry: the purge marker of an unblock expires
// too; that must not read as a block's expiry.
func TestUnblockIsNotReportedAsExpiry(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(func(c *Config) { c.MarkerTTL = time.Second }))
	ip := []schemas.Entity{{Type: "ip", Value: "192.0.2.98"}}
	r.waitApplied(r.publish(r.incident(ip, nil)))
	r.waitApplied(r.publish(r.incident(ip, func(i *schemas.Incident) { i.Type = schemas.TypeUnblock })))
	time.Sleep(3 * time.Second) // the marker's TTL passes
	if n := actionCounts(r.audits())[schemas.ActionExpired]; n != 0 {
		t.Fatalf("%d expired records after an unblock, want 0", n)
	}
}

// TestMaxDeliveriesAreDeadLettered: an incident that fails on every delivery
// (here: the bucket is gone) lands in the dead letters once JetStream gives
// up on it, announced by the max-deliveries advisory.
func TestMaxDeliveriesAreDeadLettered(t *testing.T) {
	r := newRig(t)
	c := r.newConsumer(func(c *Config) { c.MaxDeliver = 2 })
	if err := r.js.DeleteKeyValue(t.Context(), r.names.BlocksBucket); err != nil {
		t.Fatal(err)
	}
	r.run(c)
	seq := r.publish(r.incident([]schemas.Entity{{Type: "ip", Value: "192.0.2.77"}}, nil))
	s, err := r.js.Stream(t.Context(), r.names.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		m, err := s.GetLastMsgForSubject(t.Context(), r.names.DLQSubject+"."+DLQMaxDeliveries)
		if err != nil {
			return err
		}
		if got := m.Header.Get(HeaderDLQOriginalSeq); got != strconv.FormatUint(seq, 10) {
			return fmt.Errorf("dead letter of seq %s, want %d", got, seq)
		}
		return nil
	})
	if recs := auditFor(r.audits(), seq); len(recs) != 1 || recs[0].Action != schemas.ActionDeadLetter {
		t.Fatalf("audit %+v, want one dead_letter", recs)
	}
}
