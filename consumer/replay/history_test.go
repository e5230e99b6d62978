package replay_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/internal/fixture"
	"github.com/blockwire/blockwire/schemas"
)

// TestGeneratedHistory runs replay, explain and rebuild over a history of
// 50,000 incidents the pipeline applied. Expectations come from the
// generated incidents themselves, not from the code under test.
func TestGeneratedHistory(t *testing.T) {
	n := 50000
	if testing.Short() {
		n = 5000
	}
	h := newHistory(t, fixture.History(n, 1), nil)
	valid := func(yield func(int, *schemas.Incident) bool) {
		for i, it := range h.items {
			if it.Incident != nil && !yield(i, it.Incident) {
				return
			}
		}
	}

	t.Run("everything", func(t *testing.T) {
		evs := h.events(t, replay.Filter{})
		incidents := 0
		var prev time.Time // the previous incident's time
		for _, ev := range evs {
			if ev.Stream != replay.StreamIncidents {
				continue
			}
			incidents++
			if ev.Time.Before(prev) {
				t.Fatalf("timeline not in time order: incident %d at %s after one at %s", ev.Seq, ev.Time, prev)
			}
			prev = ev.Time
		}
		if incidents != n {
			t.Fatalf("%d incidents in the timeline, want %d", incidents, n)
		}
	})

	t.Run("by incident", func(t *testing.T) {
		var inc *schemas.Incident
		for _, in := range valid {
			if in.EffectiveType() != schemas.TypeUnblock && len(in.Entities) >= 2 {
				inc = in
				break
			}
		}
		evs := h.events(t, replay.Filter{Incident: inc.ID})
		if evs[0].Incident == nil || evs[0].Incident.ID != inc.ID {
			t.Fatalf("first event %+v, want the incident", evs[0])
		}
		actions := map[string]schemas.Action{}
		for _, ev := range evs[1:] {
			if ev.Audit == nil {
				t.Fatalf("a second incident in the replay of one: %+v", ev.Incident)
			}
			if ev.Audit.IncidentID == inc.ID {
				actions[ev.Audit.BlockKey] = ev.Audit.Action
			}
		}
		if actions[""] != schemas.ActionAccepted {
			t.Errorf("no accepted record: %v", actions)
		}
		for _, e := range inc.Entities {
			key, _ := consumer.KeyFor(e, inc.Scope)
			if _, ok := actions[key]; !ok {
				t.Errorf("no record for entity %+v (%s): %v", e, key, actions)
			}
		}
	})

	t.Run("by kind", func(t *testing.T) {
		want := 0
		for _, in := range valid {
			if slices.ContainsFunc(in.Entities, func(e schemas.Entity) bool { return e.Type == schemas.EntityHeader }) {
				want++
			}
		}
		got := 0
		for _, ev := range h.events(t, replay.Filter{Kind: schemas.EntityHeader}) {
			switch {
			case ev.Incident != nil:
				got++
			case ev.Audit.Kind != schemas.EntityHeader:
				t.Fatalf("record of kind %q in a header replay", ev.Audit.Kind)
			}
		}
		if got != want {
			t.Fatalf("%d incidents with a header, want %d", got, want)
		}
	})

	t.Run("by value", func(t *testing.T) {
		const ip = "198.18.0.7" // attacker 7 of the pool is an address (fixture.entity)
		want := 0
		for _, in := range valid {
			if slices.ContainsFunc(in.Entities, func(e schemas.Entity) bool { return e.Value == ip }) {
				want++
			}
		}
		if want == 0 {
			t.Fatal("the history never names the address: pick another")
		}
		got := 0
		key, _ := consumer.KeyFor(schemas.Entity{Type: schemas.EntityIP, Value: ip}, nil)
		for _, ev := range h.events(t, replay.Filter{Value: ip}) {
			switch {
			case ev.Incident != nil:
				got++
			case ev.Audit.BlockKey != key:
				t.Fatalf("record of %s in a replay of %s", ev.Audit.BlockKey, ip)
			}
		}
		if got != want {
			t.Fatalf("%d incidents name %s, want %d", got, ip, want)
		}
	})

	t.Run("time window", func(t *testing.T) {
		all := h.events(t, replay.Filter{Kind: schemas.EntityCookie})
		since, until := all[len(all)/3].Time, all[2*len(all)/3].Time
		win := h.events(t, replay.Filter{Kind: schemas.EntityCookie, Since: since, Until: until})
		if len(win) == 0 || len(win) >= len(all) {
			t.Fatalf("%d events in the window of %d", len(win), len(all))
		}
		// The window selects incidents; each comes with what was done about
		// it, even when that was recorded after the window closed.
		printed := map[uint64]bool{}
		for _, ev := range win {
			in := !ev.Time.Before(since) && !ev.Time.After(until)
			switch {
			case ev.Incident != nil && !in:
				t.Fatalf("incident at %s outside [%s, %s]", ev.Time, since, until)
			case ev.Incident != nil:
				printed[ev.Seq] = true
			case !in && !printed[ev.Audit.EventSeq]:
				t.Fatalf("record at %s of incident %d outside the window", ev.Time, ev.Audit.EventSeq)
			}
		}
	})

	t.Run("explain", func(t *testing.T) {
		key, _ := consumer.KeyFor(schemas.Entity{Type: schemas.EntityIP, Value: "198.18.0.7"}, nil)
		ex, err := h.reader.Explain(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(ex.History) == 0 {
			t.Fatal("no history")
		}
		last := ex.History[len(ex.History)-1].Audit.Action
		if blocked := ex.Block != nil; blocked != (last == schemas.ActionBlocked || last == schemas.ActionExtended) {
			t.Fatalf("blocked now: %v, but the last action is %s", blocked, last)
		}
		if _, err := h.reader.Explain(context.Background(), "not a key"); err == nil {
			t.Fatal("a bad key was explained")
		}
	})

	t.Run("rebuild", func(t *testing.T) { testRebuild(t, h, n) })
}

// testRebuild: the bucket the pipeline built is what the log implies; a dry
// run changes nothing; after a wipe, rebuild brings back the same set of
// active blocks with the same expiries.
func testRebuild(t *testing.T, h *history, n int) {
	ctx := context.Background()
	js := h.b.JetStream()
	before := h.active(t)
	rebuild := func(dry bool) *consumer.RebuildReport {
		t.Helper()
		rep, err := consumer.Rebuild(ctx, consumer.RebuildConfig{JS: js, DryRun: dry})
		if err != nil {
			t.Fatalf("rebuild (dry run %v): %v", dry, err)
		}
		return rep
	}
	rep := rebuild(true)
	if rep.Incidents != n || rep.Active != len(before) || len(rep.Create)+len(rep.Update)+len(rep.Remove) != 0 {
		t.Fatalf("on the intact bucket: %d incidents, %d active (bucket %d), create %d update %d remove %d; want no difference",
			rep.Incidents, rep.Active, len(before), len(rep.Create), len(rep.Update), len(rep.Remove))
	}
	if err := js.DeleteKeyValue(ctx, h.b.Names().BlocksBucket); err != nil {
		t.Fatal(err)
	}
	if err := h.b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := rebuild(true); len(rep.Create) != len(before) || rep.Applied {
		t.Fatalf("dry run after the wipe plans %d creations, want %d", len(rep.Create), len(before))
	}
	if got := h.active(t); len(got) != 0 {
		t.Fatalf("a dry run wrote %d blocks", len(got))
	}
	if rep := rebuild(false); !rep.Applied || len(rep.Create) != len(before) {
		t.Fatalf("rebuild created %d blocks, want %d", len(rep.Create), len(before))
	}
	after := h.active(t)
	if len(after) != len(before) {
		t.Fatalf("after rebuild %d blocks, before the wipe %d", len(after), len(before))
	}
	for k, exp := range before {
		if got, ok := after[k]; !ok || got.Sub(exp).Abs() > time.Second {
			t.Fatalf("%s: rebuilt expiry %v (present %v), want %v", k, got, ok, exp)
		}
	}
	if rep := rebuild(true); len(rep.Create)+len(rep.Update)+len(rep.Remove) != 0 {
		t.Fatalf("a second rebuild still finds differences: %s", fmt.Sprint(rep))
	}
}
