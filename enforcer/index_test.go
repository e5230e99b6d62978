package enforcer

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

func TestWriterCountsAndPlan(t *testing.T) {
	w := newTestWriter(t)
	now := time.Now().UnixMilli()
	hdr := blk{kind: "header", name: "x-api-key", value: "k"}
	steps := []struct {
		name   string
		ops    []op
		want   func(p *plan) bool
		counts map[schemas.EntityType]int64
	}{
		{"header added", []op{hdr.op()}, func(p *plan) bool { return len(p.headers) == 1 && p.headers[0].name == "x-api-key" && !p.ip },
			map[schemas.EntityType]int64{"header": 1}},
		{"same block again (extended)", []op{hdr.op()}, func(p *plan) bool { return len(p.headers) == 1 },
			map[schemas.EntityType]int64{"header": 1}},
		{"scoped twin", []op{blk{kind: "header", name: "x-api-key", value: "k", service: "s"}.op()}, func(p *plan) bool { return len(p.headers) == 1 },
			map[schemas.EntityType]int64{"header": 2}},
		{"ip added", []op{blk{kind: "ip", value: "192.0.2.1"}.op()}, func(p *plan) bool { return p.ip && len(p.headers) == 1 },
			map[schemas.EntityType]int64{"header": 2, "ip": 1}},
		{"header removed", []op{{del: true, parts: hdr.op().parts}}, func(p *plan) bool { return len(p.headers) == 1 },
			map[schemas.EntityType]int64{"header": 1, "ip": 1}},
		{"scoped twin removed", []op{{del: true, parts: blk{kind: "header", name: "x-api-key", value: "k", service: "s"}.op().parts}},
			func(p *plan) bool { return len(p.headers) == 0 && p.ip }, map[schemas.EntityType]int64{"ip": 1}},
		{"delete of an unknown name", []op{{del: true, parts: blk{kind: "cookie", name: "nope", value: "v"}.op().parts}},
			func(p *plan) bool { return p.cookies.len() == 0 }, map[schemas.EntityType]int64{"ip": 1}},
		{"already expired put is a delete", []op{{parts: blk{kind: "ip", value: "192.0.2.1"}.op().parts, exp: now - 1}},
			func(p *plan) bool { return p.none() }, map[schemas.EntityType]int64{}},
	}
	for _, s := range steps {
		if err := w.apply(s.ops, now); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !s.want(w.idx.plan.Load()) {
			t.Errorf("%s: plan %+v", s.name, *w.idx.plan.Load())
		}
		for _, k := range schemas.EntityTypes() {
			if got := w.idx.counts[kindIndex(k)].Load(); got != s.counts[k] {
				t.Errorf("%s: %s count %d, want %d", s.name, k, got, s.counts[k])
			}
		}
	}
	bad := op{parts: schemas.KeyParts{Kind: "header", Name: "x", Value: "not-a-hash"}, exp: now + 1000}
	if err := w.apply([]op{bad, blk{kind: "ip", value: "192.0.2.9"}.op()}, now); err == nil {
		t.Error("a value that is not a SHA-256 was accepted")
	}
	if w.idx.counts[kindIndex("ip")].Load() != 1 {
		t.Error("one bad op stopped the rest of its batch")
	}
}

// A published shard is never changed: a reader holding the old shard keeps seeing the old
// state, and the change copies only the touched shard.
func TestCopyOnWrite(t *testing.T) {
	w := newTestWriter(t, blk{kind: "ip", value: "192.0.2.1"}, blk{kind: "ip", value: "192.0.2.2"})
	a := mustAddr(t, "192.0.2.1")
	i := shardOf(addrHash(keyOf(a)))
	before := w.idx.addrs.shards[i].Load()
	untouched := -1
	for j := range w.idx.addrs.shards {
		if w.idx.addrs.shards[j].Load() != nil && uint64(j) != i {
			untouched = j
		}
	}
	if untouched < 0 {
		t.Fatal("both addresses are in one shard: the test needs two")
	}
	otherBefore := w.idx.addrs.shards[untouched].Load()
	if err := w.apply([]op{{del: true, parts: blk{kind: "ip", value: "192.0.2.1"}.op().parts}}, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if _, ok := before.find(keyOf(a), addrHash(keyOf(a))); !ok {
		t.Error("the published shard was changed in place")
	}
	if _, ok := w.idx.lookupAddr(a); ok {
		t.Error("the delete is not visible")
	}
	if w.idx.addrs.shards[untouched].Load() != otherBefore {
		t.Error("an untouched shard was copied")
	}
}

func TestSweep(t *testing.T) {
	now := time.Now().UnixMilli()
	w := newTestWriter(t,
		blk{kind: "ip", value: "192.0.2.1", exp: now + 10},
		blk{kind: "cidr", value: "10.0.0.0/8", exp: now + 10},
		blk{kind: "header", name: "x-api-key", value: "k", exp: now + 10},
		blk{kind: "jwt", name: "sub", value: "u", exp: now + 10, route: "r"},
		blk{kind: "consumer", value: "acme", exp: now + 60_000},
	)
	w.sweep(now + 10)
	p := w.idx.plan.Load()
	if p.ip || len(p.headers) != 0 || p.claims.len() != 0 || !p.consumer {
		t.Errorf("plan after sweep %+v: want only the consumer", *p)
	}
	if n := w.idx.entries(); n != 1 {
		t.Errorf("entries %d, want 1", n)
	}
	if w.idx.ranges.Load().Size() != 0 {
		t.Error("the expired range is still in the table")
	}
}

// Readers run beside the writer without locks; -race checks the publication is safe.
func TestConcurrentReadersAndWriter(t *testing.T) {
	w := newTestWriter(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				x := w.idx
				m := matcher{x: x, p: x.plan.Load(), now: time.Now().UnixMilli()}
				m.matchAddr(netip.AddrFrom4([4]byte{10, byte(r), byte(i >> 8), byte(i)}))
				m.matchHash(nsFirstDynamic, "v", "header")
				m.matchConsumer("c", fmt.Sprint(i%50))
			}
		})
	}
	now := time.Now().UnixMilli()
	for i := range 2000 {
		ops := []op{
			blk{kind: "ip", value: fmt.Sprintf("10.0.%d.%d", i>>8&255, i&255)}.op(),
			blk{kind: "cidr", value: fmt.Sprintf("172.%d.0.0/16", i%32)}.op(),
			blk{kind: "header", name: "x-h", value: fmt.Sprint(i)}.op(),
			blk{kind: "consumer", value: fmt.Sprint(i % 50), service: "s"}.op(),
		}
		if i%3 == 0 {
			ops = append(ops, op{del: true, parts: ops[0].parts})
		}
		if err := w.apply(ops, now); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			w.sweep(now)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// The lookup paths the issue budgets at 0 allocations.
func TestLookupsDoNotAllocate(t *testing.T) {
	w := newTestWriter(t,
		blk{kind: "ip", value: "192.0.2.1"}, blk{kind: "cidr", value: "10.0.0.0/8"},
		blk{kind: "header", name: "x-api-key", value: "k"}, blk{kind: "cookie", name: "sid", value: "s"})
	m := matcher{x: w.idx, p: w.idx.plan.Load(), now: time.Now().UnixMilli()}
	a, miss, in := mustAddr(t, "192.0.2.1"), mustAddr(t, "192.0.2.2"), mustAddr(t, "10.1.2.3")
	cases := map[string]func(){
		"addr hit":    func() { m.matchAddr(a) },
		"addr miss":   func() { m.matchAddr(miss) },
		"range hit":   func() { m.matchAddr(in) },
		"header hit":  func() { m.matchHash(nsFirstDynamic, "k", "header") },
		"header miss": func() { m.matchHash(nsFirstDynamic, "nope", "header") },
		"cookies":     func() { m.matchCookies("a=1; sid=s; b=2") },
	}
	for name, fn := range cases {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocs/op", name, n)
		}
	}
}

// staticRequest answers every PDK call from fixed values and records nothing, so that
// allocations counted around the handler are the handler's.
type staticRequest struct {
	ip      string
	headers map[string][]string
	query   string
}

func (r *staticRequest) ForwardedIP() (string, error)             { return r.ip, nil }
func (r *staticRequest) Headers(int) (map[string][]string, error) { return r.headers, nil }
func (r *staticRequest) Header(string) (string, error)            { return "", nil }
func (r *staticRequest) RawQuery() (string, error)                { return r.query, nil }
func (r *staticRequest) Consumer() (string, string, error)        { return "c-1", "alice", nil }
func (r *staticRequest) Service() (string, string, error)         { return "s-1", "orders", nil }
func (r *staticRequest) Route() (string, string, error)           { return "r-1", "list", nil }
func (r *staticRequest) Var(string) (string, error)               { return "id", nil }
func (r *staticRequest) Exit(int, []byte, map[string][]string)    {}

// An allowed request costs the handler no allocation, whatever kinds are active (go-pdk
// allocates for the PDK calls themselves).
func TestAllowedRequestDoesNotAllocate(t *testing.T) {
	w := newTestWriter(t,
		blk{kind: "ip", value: "192.0.2.1"}, blk{kind: "cidr", value: "10.0.0.0/8"},
		blk{kind: "header", name: "x-api-key", value: "k"}, blk{kind: "cookie", name: "sid", value: "s"},
		blk{kind: "query", name: "token", value: "t"}, blk{kind: "consumer", value: "mallory"})
	rt, _ := testRuntime(t, w.idx)
	c := testConfig(t, rt, `{}`)
	req := &staticRequest{ip: "198.18.0.1", query: "page=2&token=fine",
		headers: map[string][]string{"x-api-key": {"fine"}, "cookie": {"theme=dark; sid=other"}, "user-agent": {"x"}}}
	c.access(req) // warm the digest cache
	if n := testing.AllocsPerRun(200, func() { c.access(req) }); n != 0 {
		t.Errorf("%v allocs per allowed request", n)
	}
	// Escaped query names and values are decoded without allocating (a value only under a
	// name that has blocks).
	req.query = "utm%5Fsource=x&a+b=1&tok%65n=fi%6Ee&token=a+b"
	c.access(req)
	if n := testing.AllocsPerRun(200, func() { c.access(req) }); n != 0 {
		t.Errorf("%v allocs per allowed request with an escaped query", n)
	}
	if got := counterValue(rt.m.allowed); got != 2*(1+1+200) { // AllocsPerRun warms up once
		t.Errorf("%v requests allowed, want all %d", got, 2*(1+1+200))
	}
}

// The lookup cache never answers from a shard that changed: lookups interleaved with puts
// and deletes of the same values always agree with a plain set.
func TestLookupCacheFollowsChanges(t *testing.T) {
	w := newTestWriter(t, blk{kind: "header", name: "x-api-key", value: "seed"})
	ns := w.idx.plan.Load().headers[0].id
	want := map[string]bool{}
	now := time.Now().UnixMilli()
	for i := range 5000 {
		v := fmt.Sprint("v", i%37)
		switch i % 3 {
		case 0:
			if err := w.apply([]op{blk{kind: "header", name: "x-api-key", value: v}.op()}, now); err != nil {
				t.Fatal(err)
			}
			want[v] = true
		case 1:
			if err := w.apply([]op{{del: true, parts: blk{kind: "header", name: "x-api-key", value: v}.op().parts}}, now); err != nil {
				t.Fatal(err)
			}
			delete(want, v)
		}
		for j := range 3 { // read each value a few times so the cache answers
			u := fmt.Sprint("v", (i+j*11)%37)
			_, got := w.idx.lookupValue(ns, u)
			if got != want[u] {
				t.Fatalf("step %d: %s found = %v, want %v", i, u, got, want[u])
			}
		}
	}
}
