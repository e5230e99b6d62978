package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/fixture"
)

// TestRebuildFromTheLog: over a generated history, the bucket the pipeline
// built is what the log implies; a dry run changes nothing; after a wipe,
// rebuild brings back the same set of active blocks with the same expiries.
func TestRebuildFromTheLog(t *testing.T) {
	n := 50000
	if testing.Short() {
		n = 5000
	}
	r := newRig(t)
	// Several workers and the default settings: the history keeps an
	// unblock away from other incidents on the same key (see fixture.History).
	r.run(r.newConsumer(nil))
	r.waitApplied(r.publishHistory(fixture.History(n, 1)))
	before := r.snapshot()
	if len(before) < n/100 {
		t.Fatalf("only %d active blocks from %d incidents: the history is too thin to prove anything", len(before), n)
	}
	ctx := context.Background()
	rebuild := func(dry bool) *RebuildReport {
		t.Helper()
		rep, err := Rebuild(ctx, RebuildConfig{JS: r.js, DryRun: dry})
		if err != nil {
			t.Fatalf("rebuild (dry run %v): %v", dry, err)
		}
		return rep
	}

	rep := rebuild(true)
	if rep.Incidents != n || rep.Active != len(before) || len(rep.Create)+len(rep.Update)+len(rep.Remove) != 0 {
		t.Fatalf("on an intact bucket: %d incidents, %d active (bucket %d), create %d update %d remove %d; want no difference",
			rep.Incidents, rep.Active, len(before), len(rep.Create), len(rep.Update), len(rep.Remove))
	}

	if err := r.js.DeleteKeyValue(ctx, r.names.BlocksBucket); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.snapshot(); len(got) != 0 {
		t.Fatalf("wipe left %d blocks", len(got))
	}
	if rep := rebuild(true); len(rep.Create) != len(before) || rep.Applied {
		t.Fatalf("dry run after the wipe plans %d creations, want %d", len(rep.Create), len(before))
	}
	if got := r.snapshot(); len(got) != 0 {
		t.Fatalf("a dry run wrote %d blocks", len(got))
	}

	rep = rebuild(false)
	if !rep.Applied || len(rep.Create) != len(before) {
		t.Fatalf("rebuild created %d blocks, want %d", len(rep.Create), len(before))
	}
	after := r.snapshot()
	if len(after) != len(before) {
		t.Fatalf("after rebuild %d blocks, before the wipe %d", len(after), len(before))
	}
	for k, exp := range before {
		if got, ok := after[k]; !ok || got.Sub(exp).Abs() > time.Second {
			t.Fatalf("%s: rebuilt expiry %v (present %v), want %v", k, got, ok, exp)
		}
	}
	if rep := rebuild(true); len(rep.Create)+len(rep.Update)+len(rep.Remove) != 0 {
		t.Fatalf("a second rebuild still finds differences: %+v", rep)
	}
}
