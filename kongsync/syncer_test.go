package kongsync_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

func TestConvergeFromEmpty(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	r.block(schemas.EntityIP, "2001:db8::1", nil, time.Hour)
	r.block(schemas.EntityIP, "198.51.100.23", nil, time.Hour)
	r.block(schemas.EntityCIDR, "10.20.0.0/16", nil, time.Hour)
	r.block(schemas.EntityHeader, "k-123", nil, time.Hour) // the plugin's alone
	s := r.syncer(kongsync.KongConfig{}, nil)
	r.run(s)

	want := []string{"10.20.0.0/16", "198.51.100.23", "2001:db8::1", "203.0.113.7"}
	eventually(t, "global deny list", func() (bool, string) {
		got, ok := r.denyAt(kongsync.Scope{})
		return ok && slices.Equal(got, want), fmt.Sprint(got)
	})
	m := r.managed()
	if len(m) != 1 {
		t.Fatalf("%d managed plugins, want 1", len(m))
	}
	p := m[0]
	if p.ID != kongsync.PluginID("", "ip-restriction", kongsync.Scope{}) || p.InstanceName != "blockwire-deny-global" ||
		!p.Enabled || p.Config["status"] != float64(403) {
		t.Fatalf("managed plugin %+v", p)
	}
	// The list is sent sorted by address: IPv4 before IPv6, numerically.
	if got := configList(p, "deny"); !slices.Equal(got, []string{"10.20.0.0/16", "198.51.100.23", "203.0.113.7", "2001:db8::1"}) {
		t.Fatalf("deny order %v", got)
	}
	eventually(t, "status", func() (bool, string) {
		st, err := r.status()
		if err != nil {
			return false, err.Error()
		}
		return st.State == kongsync.StateSynced && st.PluginOnly[schemas.EntityHeader] == 1 && len(st.Instances) == 1,
			fmt.Sprintf("%+v", st)
	})
	eventually(t, "kong_applied audit", func() (bool, string) {
		a := r.audits(schemas.ActionKongApplied)
		return len(a) >= 1 && strings.Contains(a[0], "create ip-restriction global (4 deny entries)"), fmt.Sprint(a)
	})
	if got := metric(t, s.reg, "blockwire_kongsync_lease_holder", nil); got != 1 {
		t.Fatalf("lease holder gauge %v", got)
	}
	// Unblocking everything deletes the plugin: Kong refuses an empty ip-restriction.
	for _, k := range r.keys() {
		r.unblock(k)
	}
	eventually(t, "plugin deleted", func() (bool, string) { return len(r.managed()) == 0, fmt.Sprint(r.managed()) })
}

func TestConvergeFromDrift(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour)
	s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Period = 200 * time.Millisecond })
	r.run(s)
	want := []string{"203.0.113.7", "203.0.113.8"}
	converged := func() (bool, string) {
		got, ok := r.denyAt(kongsync.Scope{})
		m := r.managed()
		return ok && slices.Equal(sorted(got), want) && len(m) == 1 && m[0].Enabled, fmt.Sprint(m)
	}
	eventually(t, "converged", converged)
	id := kongsync.PluginID("", "ip-restriction", kongsync.Scope{})

	drifts := []struct {
		name  string
		drift func()
	}{
		{"deny list edited by hand", func() {
			if err := r.kong.EditPlugin(id, map[string]any{"config": map[string]any{"deny": []string{"1.1.1.1"}}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"plugin disabled by hand", func() {
			if err := r.kong.EditPlugin(id, map[string]any{"enabled": false}); err != nil {
				t.Fatal(err)
			}
		}},
		{"plugin deleted by hand", func() { r.kong.RemovePlugin(id) }},
		{"restored from an old backup under another id", func() {
			r.kong.RemovePlugin(id)
			if _, err := r.kong.AddPlugin(map[string]any{"name": "ip-restriction", "instance_name": "blockwire-deny-global",
				"tags": []string{kongsync.ManagedTag}, "config": map[string]any{"deny": []string{"9.9.9.9"}}}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, d := range drifts {
		t.Run(d.name, func(t *testing.T) {
			d.drift()
			eventually(t, "repaired", converged)
			eventually(t, "drift counted", func() (bool, string) {
				got := metric(t, s.reg, "blockwire_kongsync_drift_repaired_total", nil)
				return got >= float64(i+1), fmt.Sprint(got)
			})
		})
	}
}

func TestBurstCoalescing(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Window = kongsync.DefaultWindow })
	r.run(s)
	eventually(t, "first reconcile", func() (bool, string) {
		got := metric(t, s.reg, "blockwire_kongsync_reconciles_total", map[string]string{"result": "ok"})
		return got >= 1, fmt.Sprint(got)
	})
	r.kong.ResetRequests()

	const n = 2000
	start := time.Now()
	r.burst(0, n)
	burst := time.Since(start)
	eventually(t, "every address denied", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		return len(got) == n, fmt.Sprint(len(got))
	})
	converged := time.Since(start)
	// A reconcile starts one window after the first change it covers, so reconciles are at least
	// a window apart: however slow the machine, converging in C costs at most C/window + 1 writes
	// (against one per block without coalescing).
	limit := int(converged/kongsync.DefaultWindow) + 1
	if got := writes(r.kong); got > limit || got < 1 {
		t.Fatalf("%d writes for a burst of %d blocks converged in %s, want 1..%d", got, n, converged, limit)
	}
	t.Logf("%d blocks stored in %s, converged in %s: %d writes", n, burst, converged, writes(r.kong))
}

func TestExpiresAtIsAuthoritative(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	r.block(schemas.EntityIP, "203.0.113.8", nil, 1500*time.Millisecond) // no KV TTL: only expiresAt
	s := r.syncer(kongsync.KongConfig{}, nil)
	r.run(s)
	eventually(t, "expired block dropped without a bucket change", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		return slices.Equal(got, []string{"203.0.113.7"}), fmt.Sprint(got)
	})
}

func TestOnce(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	s := r.syncer(kongsync.KongConfig{}, nil)
	ctx := context.Background()
	plan, err := s.Once(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Ops) != 1 || plan.Ops[0].Action != kongsync.ActionCreate || writes(r.kong) != 0 {
		t.Fatalf("dry run: %+v, %d writes", plan.Ops, writes(r.kong))
	}
	if plan, err = s.Once(ctx, false); err != nil || len(plan.Ops) != 1 {
		t.Fatalf("once: %+v, %v", plan, err)
	}
	if _, ok := r.denyAt(kongsync.Scope{}); !ok {
		t.Fatal("once wrote nothing")
	}
	if plan, err = s.Once(ctx, true); err != nil || len(plan.Ops) != 0 {
		t.Fatalf("after once, the dry run still plans %+v, %v", plan, err)
	}
	// While a running sync holds the lease, once refuses to write.
	other := r.syncer(kongsync.KongConfig{}, nil)
	r.run(other)
	eventually(t, "the other leads", func() (bool, string) {
		return metric(t, other.reg, "blockwire_kongsync_lease_holder", nil) == 1, ""
	})
	if _, err := s.Once(ctx, false); !errors.Is(err, kongsync.ErrLeaseHeld) {
		t.Fatalf("once beside a leader: %v", err)
	}
}

// keys lists the bucket's keys.
func (r *rig) keys() []string {
	r.t.Helper()
	lister, err := r.kv.ListKeys(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// configList reads a config list in the order Kong holds it.
func configList(p kongfake.Plugin, field string) []string {
	list, _ := p.Config[field].([]any)
	var out []string
	for _, v := range list {
		out = append(out, v.(string))
	}
	return out
}
