package kongsync_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

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
	// Kong may hold the plugin a moment before the syncer has read the answer and counted it.
	eventually(t, "the write counted", func() (bool, string) {
		got := metric(t, s.reg, "blockwire_kongsync_writes_total", map[string]string{"outcome": "ok"})
		return got == 1, fmt.Sprint(got)
	})
	// At least the three injected; a machine slow enough to time out a request adds more.
	if got := metric(t, s.reg, "blockwire_kongsync_writes_total", map[string]string{"outcome": "retry"}); got < 3 {
		t.Fatalf("%v retried writes, want 3", got)
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
	time.Sleep(time.Second) // several retries (the backoff is capped at 200ms here)
	if n := len(r.audits(schemas.ActionKongFailed)); n != 1 {
		t.Fatalf("%d kong_failed records for one lasting failure, want 1", n)
	}
	if n := metric(t, s.reg, "blockwire_kongsync_reconciles_total", map[string]string{"result": "failed"}); n < 2 {
		t.Fatalf("%v failed reconciles in a second: not retried", n)
	}
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
	// Each replica marks its Admin API requests, so the fake tells who wrote.
	replica := func(name string) *instance {
		return r.syncer(kongsync.KongConfig{Headers: []string{header("X-Replica", name)}}, func(c *kongsync.Config) { c.Holder = name })
	}
	a := replica("a")
	stopA := r.run(a)
	eventually(t, "a leads", func() (bool, string) {
		return metric(t, a.reg, "blockwire_kongsync_lease_holder", nil) == 1, "a not leading"
	})
	b := replica("b")
	r.run(b)
	c := replica("c")
	r.run(c)
	eventually(t, "converged", func() (bool, string) {
		_, ok := r.denyAt(kongsync.Scope{})
		return ok, ""
	})
	// Give b and c time to campaign: while a holds the lease, neither may talk to Kong. (Were this
	// machine so slow that a missed its renewals for a whole TTL, a handover would be legitimate:
	// the check then only holds while the lease key still names a.)
	time.Sleep(time.Second)
	if holder := r.leaseHolder(); holder == "a" {
		if n := r.kong.Count(func(req kongfake.Request) bool { return req.Header.Get("X-Replica") != "a" }); n != 0 {
			t.Fatalf("%d Admin API requests from replicas not holding the lease", n)
		}
	} else {
		t.Logf("a lost the lease to %q (a slow machine): skipping the one-writer check", holder)
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
	eventually(t, "the status names the new holder", func() (bool, string) {
		st, err := r.status()
		return err == nil && st.Holder == other.Holder(), fmt.Sprint(st, err)
	})
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
