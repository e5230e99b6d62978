package replay_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/schemas"
)

// TestExplainExpiredBlock: a value still in the bucket whose expiry has
// passed is not a block — Explain (and so explain --json) says not blocked,
// as the lister does; an unexpired one is reported.
func TestExplainExpiredBlock(t *testing.T) {
	ctx := context.Background()
	b := natstest.Provisioned(t, natstest.Start(t).URL())
	kv, err := b.JetStream().KeyValue(ctx, b.Names().BlocksBucket)
	if err != nil {
		t.Fatal(err)
	}
	r, err := replay.NewReader(b.JetStream(), b.Names())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, tc := range []struct {
		ip      string
		expires time.Time
		blocked bool
	}{
		{"198.51.100.1", now.Add(-time.Minute), false},
		{"198.51.100.2", now.Add(time.Hour), true},
	} {
		key, err := consumer.KeyFor(schemas.Entity{Type: schemas.EntityIP, Value: tc.ip}, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(schemas.Block{Kind: schemas.EntityIP, Value: tc.ip, CreatedAt: now.Add(-time.Hour),
			ExpiresAt: tc.expires, IncidentIDs: []string{"inc-1"}, Source: schemas.SourceManual})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		ex, err := r.Explain(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := ex.Block != nil; got != tc.blocked {
			t.Errorf("%s expiring %s: blocked %v, want %v", key, tc.expires, got, tc.blocked)
		}
	}
}
