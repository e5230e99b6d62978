package kongsync_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

func TestScopedBlocks(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	orders := r.kong.AddService("orders")
	list := r.kong.AddRoute("list-orders", orders)
	users := r.kong.AddService("users")
	r.block(schemas.EntityIP, "203.0.113.1", nil, time.Hour)
	kB := r.block(schemas.EntityIP, "203.0.113.2", &schemas.Scope{Service: "orders"}, time.Hour)
	kC := r.block(schemas.EntityCIDR, "198.51.100.0/24", &schemas.Scope{Route: "list-orders"}, time.Hour)
	r.block(schemas.EntityIP, "203.0.113.3", &schemas.Scope{Service: users}, time.Hour) // by id
	r.block(schemas.EntityIP, "203.0.113.4", &schemas.Scope{Service: "missing"}, time.Hour)
	r.block(schemas.EntityIP, "203.0.113.5", &schemas.Scope{Service: "users", Route: "list-orders"}, time.Hour)
	s := r.syncer(kongsync.KongConfig{}, nil)
	r.run(s)

	// Kong runs only the most specific instance, so each scoped list carries the lists above it.
	expect := map[kongsync.Scope][]string{
		{}:                {"203.0.113.1"},
		{Service: orders}: {"203.0.113.1", "203.0.113.2"},
		{Route: list}:     {"198.51.100.0/24", "203.0.113.1", "203.0.113.2"},
		{Service: users}:  {"203.0.113.1", "203.0.113.3"},
	}
	check := func(expect map[kongsync.Scope][]string) func() (bool, string) {
		return func() (bool, string) {
			if n := len(r.managed()); n != len(expect) {
				return false, fmt.Sprintf("%d managed plugins, want %d", n, len(expect))
			}
			for sc, want := range expect {
				got, ok := r.denyAt(sc)
				if !ok || !slices.Equal(sorted(got), want) {
					return false, fmt.Sprintf("%s: %v", sc, got)
				}
			}
			return true, ""
		}
	}
	eventually(t, "scoped lists", check(expect))
	eventually(t, "unresolved scopes reported", func() (bool, string) {
		st, err := r.status()
		if err != nil {
			return false, err.Error()
		}
		var reasons []string
		for _, u := range st.Unresolved {
			reasons = append(reasons, u.Reason)
		}
		slices.Sort(reasons)
		return slices.Equal(reasons, []string{`route "list-orders" does not belong to service "users"`, `service "missing" not found in Kong`}),
			fmt.Sprint(reasons)
	})
	r.unblock(kB)
	r.unblock(kC)
	delete(expect, kongsync.Scope{Service: orders})
	delete(expect, kongsync.Scope{Route: list})
	eventually(t, "scoped plugins removed", check(expect))
}

func TestConsumerBlocks(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	acme := r.kong.AddConsumer("acme")
	beta := r.kong.AddConsumer("beta")
	orders := r.kong.AddService("orders")
	kA := r.block(schemas.EntityConsumer, "acme", nil, time.Hour)
	r.block(schemas.EntityConsumer, acme, nil, time.Hour) // the same consumer by id: one plugin
	r.block(schemas.EntityConsumer, "beta", &schemas.Scope{Service: "orders"}, time.Hour)
	r.block(schemas.EntityConsumer, "ghost", nil, time.Hour)
	s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Message = "Blocked" })
	r.run(s)
	find := func(consumer, service string) (kongfake.Plugin, bool) {
		for _, p := range r.managed() {
			if p.Name == "request-termination" && p.Consumer == consumer && p.Service == service {
				return p, true
			}
		}
		return kongfake.Plugin{}, false
	}
	eventually(t, "consumers blocked", func() (bool, string) {
		_, okA := find(acme, "")
		_, okB := find(beta, orders)
		return okA && okB && len(r.managed()) == 2, fmt.Sprint(r.managed())
	})
	p, _ := find(acme, "")
	if p.Config["status_code"] != float64(403) || p.Config["message"] != "Blocked" ||
		p.ID != kongsync.PluginID("", "request-termination", kongsync.Scope{Consumer: acme}) {
		t.Fatalf("request-termination %+v", p)
	}
	eventually(t, "ghost unresolved", func() (bool, string) {
		st, err := r.status()
		return err == nil && len(st.Unresolved) == 1 && st.Unresolved[0].Consumer == "ghost", fmt.Sprint(st, err)
	})
	r.unblock(kA)
	// A reconcile has seen the unblock once the status counts one active block fewer (four: acme
	// by name and by id, beta, ghost); only then does the plugin still standing mean anything.
	eventually(t, "a reconcile after the unblock", func() (bool, string) {
		st, err := r.status()
		return err == nil && st.Blocks == 3, fmt.Sprint(st, err)
	})
	if _, ok := find(acme, ""); !ok {
		t.Fatal("the block by id still stands; the plugin must stay")
	}
	for _, k := range r.keys() {
		r.unblock(k)
	}
	eventually(t, "consumers unblocked", func() (bool, string) { return len(r.managed()) == 0, fmt.Sprint(r.managed()) })
}

func TestUntaggedPluginsLeftAlone(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	svc := r.kong.AddService("users")
	c := r.kong.AddConsumer("acme")
	var mine []kongfake.Plugin
	for _, body := range []map[string]any{
		{"name": "key-auth", "config": map[string]any{"key_names": []string{"apikey"}}},
		{"name": "rate-limiting", "service": map[string]any{"id": svc}, "config": map[string]any{"minute": 5}},
		{"name": "ip-restriction", "consumer": map[string]any{"id": c}, "tags": []string{"team-a"},
			"config": map[string]any{"allow": []string{"10.0.0.0/8"}}},
		{"name": "request-termination", "consumer": map[string]any{"id": c}, "config": map[string]any{"status_code": 503}},
	} {
		p, err := r.kong.AddPlugin(body)
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, p)
	}
	key := r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Period = 200 * time.Millisecond })
	r.run(s)
	eventually(t, "converged", func() (bool, string) { _, ok := r.denyAt(kongsync.Scope{}); return ok, "" })
	r.unblock(key)
	eventually(t, "managed removed", func() (bool, string) { return len(r.managed()) == 0, "" })
	// A few more reconciles (full ones, every Period) must leave the user's plugins alone.
	ok := map[string]string{"result": "ok"}
	before := metric(t, s.reg, "blockwire_kongsync_reconciles_total", ok)
	eventually(t, "two more reconciles", func() (bool, string) {
		n := metric(t, s.reg, "blockwire_kongsync_reconciles_total", ok)
		return n >= before+2, fmt.Sprintf("%v reconciles, %v before", n, before)
	})
	for _, want := range mine {
		got, ok := r.kong.Plugin(want.ID)
		if !ok || got.UpdatedAt != want.UpdatedAt || fmt.Sprint(got.Config) != fmt.Sprint(want.Config) {
			t.Fatalf("user plugin %s changed: %+v", want.Name, got)
		}
		if n := r.kong.Count(func(req kongfake.Request) bool { return req.Write() && strings.Contains(req.Path, want.ID) }); n != 0 {
			t.Fatalf("%d writes to user plugin %s", n, want.Name)
		}
	}
}

func TestPrecedenceTrap(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(r *rig) (userPlugin string)
		blocks   func(r *rig)
		kind     kongsync.RiskKind
		missing  int
		managed  int // managed plugins expected
		noGlobal bool
	}{
		{
			name: "route-level ip-restriction skips the global deny list",
			setup: func(r *rig) string {
				svc := r.kong.AddService("orders")
				rt := r.kong.AddRoute("checkout", svc)
				p, err := r.kong.AddPlugin(map[string]any{"name": "ip-restriction", "route": map[string]any{"id": rt},
					"config": map[string]any{"deny": []string{"192.0.2.1", "203.0.113.7"}}})
				if err != nil {
					r.t.Fatal(err)
				}
				return p.ID
			},
			blocks: func(r *rig) {
				r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour) // the user's list has this one
				r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour)
				r.block(schemas.EntityIP, "203.0.113.9", nil, time.Hour)
			},
			kind: kongsync.RiskBypass, missing: 2, managed: 1,
		},
		{
			name: "consumer-level ip-restriction skips the global deny list for that consumer",
			setup: func(r *rig) string {
				c := r.kong.AddConsumer("partner")
				p, err := r.kong.AddPlugin(map[string]any{"name": "ip-restriction", "consumer": map[string]any{"id": c},
					"config": map[string]any{"allow": []string{"10.0.0.0/8"}}})
				if err != nil {
					r.t.Fatal(err)
				}
				return p.ID
			},
			blocks: func(r *rig) { r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour) },
			kind:   kongsync.RiskBypass, missing: 1, managed: 1,
		},
		{
			name: "a user-owned instance occupies the scope a scoped block needs",
			setup: func(r *rig) string {
				svc := r.kong.AddService("orders")
				p, err := r.kong.AddPlugin(map[string]any{"name": "ip-restriction", "service": map[string]any{"id": svc},
					"config": map[string]any{"deny": []string{"192.0.2.1"}}})
				if err != nil {
					r.t.Fatal(err)
				}
				return p.ID
			},
			blocks: func(r *rig) { r.block(schemas.EntityIP, "203.0.113.8", &schemas.Scope{Service: "orders"}, time.Hour) },
			kind:   kongsync.RiskOccupied, missing: 1, managed: 0, noGlobal: true,
		},
		{
			name: "a managed route instance would switch off a user's service-level allow list",
			setup: func(r *rig) string {
				svc := r.kong.AddService("orders")
				r.kong.AddRoute("checkout", svc)
				p, err := r.kong.AddPlugin(map[string]any{"name": "ip-restriction", "service": map[string]any{"id": svc},
					"config": map[string]any{"allow": []string{"10.0.0.0/8"}}})
				if err != nil {
					r.t.Fatal(err)
				}
				return p.ID
			},
			blocks: func(r *rig) { r.block(schemas.EntityIP, "10.1.2.3", &schemas.Scope{Route: "checkout"}, time.Hour) },
			kind:   kongsync.RiskShadow, missing: 1, managed: 0, noGlobal: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, kongfake.Options{})
			userID := tc.setup(r)
			before, _ := r.kong.Plugin(userID)
			tc.blocks(r)
			s := r.syncer(kongsync.KongConfig{}, nil)
			r.run(s)
			eventually(t, "risk reported", func() (bool, string) {
				st, err := r.status()
				if err != nil {
					return false, err.Error()
				}
				return len(st.Risks) == 1 && st.Risks[0].Kind == tc.kind && st.Risks[0].Plugin == userID &&
					st.Risks[0].Missing == tc.missing && len(r.managed()) == tc.managed, fmt.Sprintf("%+v", st.Risks)
			})
			if got := metric(t, s.reg, "blockwire_kongsync_bypass_risks", map[string]string{"kind": string(tc.kind)}); got != 1 {
				t.Fatalf("risk gauge %v", got)
			}
			if s.logs.count("kong precedence keeps managed deny entries from applying") != 1 {
				t.Fatal("risk not logged exactly once")
			}
			after, _ := r.kong.Plugin(userID)
			if after.UpdatedAt != before.UpdatedAt || fmt.Sprint(after.Config) != fmt.Sprint(before.Config) {
				t.Fatalf("user plugin changed: %+v", after)
			}
		})
	}
}
