package kongsync_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	// A reconcile starts one window after the first change it covers: a burst lasting B costs
	// at most B/window + 2 writes, however slow the machine.
	limit := int(burst/kongsync.DefaultWindow) + 2
	if got := writes(r.kong); got > limit || got < 1 {
		t.Fatalf("%d writes for a burst of %d blocks over %s, want 1..%d", got, n, burst, limit)
	}
	t.Logf("%d blocks over %s: %d writes", n, burst, writes(r.kong))
}

func TestFaultsThenRecovery(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	// Transient faults, each retried within one call: 503s, a 429 with Retry-After, a dropped
	// connection, a request slower than the client's timeout.
	r.kong.Inject(kongfake.Fault{WritesOnly: true, Status: http.StatusServiceUnavailable, Times: 2})
	r.kong.Inject(kongfake.Fault{WritesOnly: true, Status: http.StatusTooManyRequests, RetryAfter: "1", Times: 1})
	r.kong.Inject(kongfake.Fault{Method: http.MethodGet, Path: "/plugins", Drop: true, Times: 1})
	r.kong.Inject(kongfake.Fault{Method: http.MethodGet, Path: "/plugins", Delay: 3 * time.Second, Times: 1})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	s := r.syncer(kongsync.KongConfig{RequestTimeout: 500 * time.Millisecond}, nil)
	r.run(s)
	eventually(t, "converged through transient faults", func() (bool, string) {
		got, ok := r.denyAt(kongsync.Scope{})
		return ok && slices.Equal(got, []string{"203.0.113.7"}), fmt.Sprint(got)
	})
	if got := metric(t, s.reg, "blockwire_kongsync_writes_total", map[string]string{"outcome": "retry"}); got != 3 {
		t.Fatalf("%v retried writes, want 3", got)
	}
	if got := metric(t, s.reg, "blockwire_kongsync_writes_total", map[string]string{"outcome": "ok"}); got != 1 {
		t.Fatalf("%v successful writes, want 1", got)
	}

	// A Kong that keeps failing: the reconcile gives up, is audited as failed, and backs off.
	remove := r.kong.Inject(kongfake.Fault{WritesOnly: true, Status: http.StatusInternalServerError})
	r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour)
	eventually(t, "kong_failed audit", func() (bool, string) {
		a := r.audits(schemas.ActionKongFailed)
		return len(a) >= 1, fmt.Sprint(a)
	})
	eventually(t, "failing status", func() (bool, string) {
		st, err := r.status()
		return err == nil && st.State == kongsync.StateFailing, fmt.Sprint(st, err)
	})
	remove()
	eventually(t, "recovered", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		return slices.Equal(got, []string{"203.0.113.7", "203.0.113.8"}), fmt.Sprint(got)
	})
	eventually(t, "synced status", func() (bool, string) {
		st, err := r.status()
		return err == nil && st.State == kongsync.StateSynced, fmt.Sprint(st, err)
	})
}

func TestLeaseHandover(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	a := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Holder = "a" })
	stopA := r.run(a)
	eventually(t, "a leads", func() (bool, string) {
		return metric(t, a.reg, "blockwire_kongsync_lease_holder", nil) == 1, "a not leading"
	})
	b := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Holder = "b" })
	r.run(b)
	c := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Holder = "c" })
	r.run(c)
	eventually(t, "converged", func() (bool, string) {
		_, ok := r.denyAt(kongsync.Scope{})
		return ok, ""
	})
	// Give b and c time to campaign: neither may lead while a does.
	time.Sleep(time.Second)
	if metric(t, b.reg, "blockwire_kongsync_lease_holder", nil)+metric(t, c.reg, "blockwire_kongsync_lease_holder", nil) != 0 {
		t.Fatal("two holders at once")
	}

	// A clean stop releases the lease: another replica takes over without waiting for the TTL.
	stopA()
	eventually(t, "b or c leads", func() (bool, string) {
		return metric(t, b.reg, "blockwire_kongsync_lease_holder", nil)+metric(t, c.reg, "blockwire_kongsync_lease_holder", nil) == 1, ""
	})
	leader, other := b, c
	if metric(t, c.reg, "blockwire_kongsync_lease_holder", nil) == 1 {
		leader, other = c, b
	}
	r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour)
	eventually(t, "the new leader syncs", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		return len(got) == 2, fmt.Sprint(got)
	})

	// The leader dies without releasing (its NATS connection cut): the lease expires after its
	// TTL and the last replica takes over.
	leader.nc.Close()
	eventually(t, "the other replica leads after the TTL", func() (bool, string) {
		return metric(t, other.reg, "blockwire_kongsync_lease_holder", nil) == 1, ""
	})
	eventually(t, "the dead leader stopped leading", func() (bool, string) {
		return metric(t, leader.reg, "blockwire_kongsync_lease_holder", nil) == 0, ""
	})
	r.block(schemas.EntityIP, "203.0.113.9", nil, time.Hour)
	eventually(t, "the last replica syncs", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		return len(got) == 3, fmt.Sprint(got)
	})
	st, err := r.status()
	if err != nil || st.Holder != other.Holder() {
		t.Fatalf("status holder %v, %v; want %s", st, err, other.Holder())
	}
}

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
	time.Sleep(300 * time.Millisecond)
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
	time.Sleep(500 * time.Millisecond) // a few full reconciles
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

func TestDBLessStandDown(t *testing.T) {
	t.Run("detected from the node information", func(t *testing.T) {
		r := newRig(t, kongfake.Options{DBLess: true})
		r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
		s := r.syncer(kongsync.KongConfig{}, nil)
		r.run(s)
		eventually(t, "stood down", func() (bool, string) {
			st, err := r.status()
			return err == nil && st.State == kongsync.StateDBLess, fmt.Sprint(st, err)
		})
		time.Sleep(time.Second) // the recheck is 300ms in tests: a few probes, no writes
		if n := writes(r.kong); n != 0 {
			t.Fatalf("%d writes to a DB-less Kong", n)
		}
		if n := s.logs.count("kong runs DB-less"); n != 1 {
			t.Fatalf("%d stand-down log lines, want 1", n)
		}
		if n := len(r.kong.Requests()); n > 20 {
			t.Fatalf("%d requests in a second while standing down: a hot loop", n)
		}
		if got := metric(t, s.reg, "blockwire_kongsync_dbless", nil); got != 1 {
			t.Fatalf("dbless gauge %v", got)
		}
		// Kong gets a database: the sync resumes.
		r.kong.SetDBLess(false)
		eventually(t, "resumed", func() (bool, string) { _, ok := r.denyAt(kongsync.Scope{}); return ok, "" })
	})
	t.Run("detected from a 405 on the first write", func(t *testing.T) {
		r := newRig(t, kongfake.Options{})
		r.kong.Inject(kongfake.Fault{WritesOnly: true, Status: http.StatusMethodNotAllowed})
		r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
		s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.DBLessRecheck = time.Hour })
		r.run(s)
		eventually(t, "stood down", func() (bool, string) {
			st, err := r.status()
			return err == nil && st.State == kongsync.StateDBLess, fmt.Sprint(st, err)
		})
		r.block(schemas.EntityIP, "203.0.113.8", nil, time.Hour)
		time.Sleep(time.Second)
		if n := writes(r.kong); n != 1 {
			t.Fatalf("%d writes, want the one that found out", n)
		}
		if n := s.logs.count("kong runs DB-less"); n != 1 {
			t.Fatalf("%d stand-down log lines, want 1", n)
		}
	})
}

func TestUnauthorized(t *testing.T) {
	r := newRig(t, kongfake.Options{RequireHeaders: http.Header{"Kong-Admin-Token": {"s3cret"}}})
	r.block(schemas.EntityIP, "203.0.113.7", nil, time.Hour)
	bad := r.syncer(kongsync.KongConfig{Headers: []string{header("Kong-Admin-Token", "wrong")}}, nil)
	stop := r.run(bad)
	eventually(t, "unauthorized reported", func() (bool, string) {
		st, err := r.status()
		return err == nil && st.State == kongsync.StateUnauthorized &&
			metric(t, bad.reg, "blockwire_kongsync_auth_failures_total", nil) >= 1, fmt.Sprint(st, err)
	})
	before := len(r.kong.Requests())
	time.Sleep(time.Second) // AuthRetry is 300ms in tests: a few attempts, not a storm
	if n := len(r.kong.Requests()) - before; n > 20 {
		t.Fatalf("%d requests in a second after a 401", n)
	}
	if bad.logs.count("kong refused the admin credentials") < 1 || bad.logs.count("wrong") != 0 {
		t.Fatal("want a clear error that never shows the header value")
	}
	stop()
	good := r.syncer(kongsync.KongConfig{Headers: []string{header("Kong-Admin-Token", "s3cret")}}, nil)
	r.run(good)
	eventually(t, "synced with the token", func() (bool, string) { _, ok := r.denyAt(kongsync.Scope{}); return ok, "" })
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
