package kongsync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/kong/go-kong/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/internal/natstest"
)

func TestSortAddrs(t *testing.T) {
	got := sortAddrs([]string{"2001:db8::1", "10.0.0.0/8", "9.9.9.9", "10.0.0.1", "10.0.0.0/16", "9.9.9.9", "::1", "10.0.0.1/32"})
	want := []string{"9.9.9.9", "10.0.0.0/8", "10.0.0.0/16", "10.0.0.1", "10.0.0.1/32", "::1", "2001:db8::1"}
	if !slices.Equal(got, want) {
		t.Fatalf("sortAddrs = %v, want %v", got, want)
	}
}

func TestScopeRankAndOverlap(t *testing.T) {
	routeSvc := map[string]string{"r1": "s1", "r2": "s2"}
	rs := func(r string) string { return routeSvc[r] }
	tests := []struct {
		name    string
		a, b    Scope
		overlap bool
		aFirst  bool // a outranks b (more specific)
	}{
		{"global and a route", Scope{}, Scope{Route: "r1"}, true, false},
		{"a route of the service", Scope{Route: "r1"}, Scope{Service: "s1"}, true, true},
		{"a route of another service", Scope{Route: "r2"}, Scope{Service: "s1"}, false, true},
		{"two services", Scope{Service: "s1"}, Scope{Service: "s2"}, false, false},
		{"a consumer and a service", Scope{Consumer: "c"}, Scope{Service: "s1"}, true, true},
		{"two consumers", Scope{Consumer: "c"}, Scope{Consumer: "d"}, false, false},
		{"consumer+route and route", Scope{Consumer: "c", Route: "r1"}, Scope{Route: "r1"}, true, true},
		{"route+service and route", Scope{Route: "r1", Service: "s1"}, Scope{Route: "r1"}, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := overlaps(tc.a, tc.b, rs); got != tc.overlap {
				t.Fatalf("overlaps = %v", got)
			}
			if got := overlaps(tc.b, tc.a, rs); got != tc.overlap {
				t.Fatalf("overlaps is not symmetric")
			}
			if got := tc.a.rank() < tc.b.rank(); got != tc.aFirst {
				t.Fatalf("rank %d vs %d", tc.a.rank(), tc.b.rank())
			}
		})
	}
}

func TestPluginIDIsDeterministic(t *testing.T) {
	a := PluginID("", pluginIPRestriction, Scope{Service: "s"})
	if a != PluginID("", pluginIPRestriction, Scope{Service: "s"}) {
		t.Fatal("not deterministic")
	}
	others := []string{
		PluginID("", pluginIPRestriction, Scope{}),
		PluginID("", pluginIPRestriction, Scope{Route: "s"}),
		PluginID("", pluginTermination, Scope{Service: "s"}),
		PluginID("team-a", pluginIPRestriction, Scope{Service: "s"}),
	}
	for _, o := range others {
		if o == a {
			t.Fatal("two scopes share an id")
		}
	}
	if u, err := uuid.Parse(a); err != nil || u.Version() != 5 {
		t.Fatalf("id %s is not a UUIDv5", a)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	tooMany := kong.NewAPIError(http.StatusTooManyRequests, "slow down")
	tooMany.SetDetails(kong.ErrTooManyRequestsDetails{RetryAfter: 7 * time.Second})
	tests := []struct {
		err        error
		sentinel   error
		retry      bool
		retryAfter time.Duration
		outcome    string
	}{
		{nil, nil, false, 0, outcomeOK},
		{errors.New("connection refused"), ErrUnavailable, true, 0, outcomeRetry},
		{kong.NewAPIError(502, "bad gateway"), ErrUnavailable, true, 0, outcomeRetry},
		{tooMany, ErrUnavailable, true, 7 * time.Second, outcomeRetry},
		{kong.NewAPIError(401, "no"), ErrUnauthorized, false, 0, outcomeUnauthorized},
		{kong.NewAPIError(403, "no"), ErrUnauthorized, false, 0, outcomeUnauthorized},
		{kong.NewAPIError(405, "db-less"), ErrDBLess, false, 0, outcomeDBLess},
		{kong.NewAPIError(409, "unique"), ErrConflict, false, 0, outcomeConflict},
		{kong.NewAPIError(404, "gone"), ErrNotFound, false, 0, outcomeRejected},
		{kong.NewAPIError(400, "schema"), ErrRejected, false, 0, outcomeRejected},
	}
	for _, tc := range tests {
		sentinel, retry, ra := classify(ctx, tc.err)
		if sentinel != tc.sentinel || retry != tc.retry || ra != tc.retryAfter || outcomeOf(sentinel, retry) != tc.outcome {
			t.Errorf("classify(%v) = %v, %v, %v", tc.err, sentinel, retry, ra)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if sentinel, retry, _ := classify(cancelled, errors.New("x")); !errors.Is(sentinel, context.Canceled) || retry {
		t.Errorf("a cancelled call is retried: %v", sentinel)
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	p := RetryPolicy{Attempts: 5, Base: 100 * time.Millisecond, Max: time.Second}
	for n := range 30 {
		if d := p.backoff(n); d <= 0 || d > time.Second {
			t.Fatalf("backoff(%d) = %s", n, d)
		}
	}
	// The first retry waits at most Base, jittered.
	for range 100 {
		if d := p.backoff(1); d <= 0 || d > p.Base {
			t.Fatalf("backoff(1) = %s, want in (0, %s]", d, p.Base)
		}
	}
	// By the fourth the ceiling has doubled three times, to 8×Base. Full jitter draws uniformly
	// below it, so one draw is at most Base with probability 1/8 if the ceiling grew — and always
	// if it did not. 64 draws all at most Base: (1/8)^64 = 2^-192 with growth, so a failure means
	// the backoff does not grow, never bad luck.
	grew := false
	for range 64 {
		if p.backoff(4) > p.Base {
			grew = true
			break
		}
	}
	if !grew {
		t.Fatalf("backoff(4) never exceeded Base %s in 64 draws: it does not grow", p.Base)
	}
}

func TestSameValue(t *testing.T) {
	tests := []struct {
		have, want any
		same       bool
	}{
		{nil, nil, true},
		{[]any{}, nil, true},
		{[]any{"a"}, nil, false},
		{[]any{"b", "a"}, []string{"a", "b"}, true},
		{[]any{"a", "a"}, []string{"a", "b"}, false},
		{float64(403), 403, true},
		{float64(503), 403, false},
		{"Forbidden", "Forbidden", true},
		{false, false, true},
	}
	for _, tc := range tests {
		if got := sameValue(tc.have, tc.want); got != tc.same {
			t.Errorf("sameValue(%v, %v) = %v", tc.have, tc.want, got)
		}
	}
}

// testSyncer is a Syncer with only what plan and apply need, on a fake Kong.
func testSyncer(t testing.TB, k *kongfake.Server) *Syncer {
	t.Helper()
	client, err := NewKongClient(KongConfig{URL: k.URL(), RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Kong: client, Message: DefaultMessage, Now: time.Now}
	return &Syncer{cfg: cfg, m: m, log: zerolog.Nop(), api: &admin{
		plugins: client.Plugins, info: client, requests: client, retry: RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}, m: m, log: zerolog.Nop(),
	}}
}

// A plugin that appears between reading Kong and writing makes the PUT a 409: a managed one (tag,
// name and scope checked) is adopted under its id; a user-owned one is reported and left alone.
func TestConflictOnWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tags    []string
		adopted bool
	}{
		{"a managed plugin under another id is adopted", []string{ManagedTag}, true},
		{"a user-owned plugin is a risk", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kongfake.New(t, kongfake.Options{})
			s := testSyncer(t, k)
			ctx := context.Background()
			state := newBlockState()
			state.put("ip.=.=.=.203_2E0_2E113_2E7", entry{kind: "ip", value: "203.0.113.7", expiresAt: time.Now().Add(time.Hour)})
			ss := newSession(s.api)
			plan, err := s.plan(ctx, ss, state) // Kong is empty: the plan creates the global instance
			if err != nil || len(plan.Ops) != 1 {
				t.Fatalf("plan %+v, %v", plan, err)
			}
			theirs, err := k.AddPlugin(map[string]any{"name": "ip-restriction", "tags": tc.tags,
				"config": map[string]any{"deny": []string{"192.0.2.1"}}})
			if err != nil {
				t.Fatal(err)
			}
			done, failures, err := s.apply(ctx, plan, nil)
			if err != nil || len(failures) != 0 {
				t.Fatalf("apply: %v, %v", failures, err)
			}
			got, _ := k.Plugin(theirs.ID)
			if tc.adopted {
				if done != 1 || !slices.Equal(got.ConfigStrings("deny"), []string{"203.0.113.7"}) || plan.Instances[0].ID != theirs.ID {
					t.Fatalf("not adopted: %d writes, %+v", done, got)
				}
				return
			}
			if done != 0 || len(plan.Risks) != 1 || plan.Risks[0].Kind != RiskOccupied || len(plan.Instances) != 0 ||
				got.UpdatedAt != theirs.UpdatedAt {
				t.Fatalf("user plugin not left alone: %d writes, risks %+v, plugin %+v", done, plan.Risks, got)
			}
		})
	}
}

func TestLeaseLostWhenTaken(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := ensureLeaseBucket(ctx, js, "leases", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ensureLeaseBucket(ctx, js, "leases", 1); err != nil {
		t.Fatalf("provisioning twice: %v", err)
	}
	mk := func(holder string) *lease {
		return &lease{kv: kv, pub: js, subject: "$KV.leases.k", key: "k", holder: holder, ttl: 3 * time.Second,
			log: zerolog.Nop(), now: time.Now}
	}
	a, b := mk("a"), mk("b")
	if ok, err := a.tryAcquire(ctx); !ok || err != nil {
		t.Fatalf("a: %v, %v", ok, err)
	}
	if ok, err := b.tryAcquire(ctx); ok || err != nil {
		t.Fatalf("b acquired a held lease: %v, %v", ok, err)
	}
	if err := a.renew(ctx); err != nil || !a.valid() {
		t.Fatalf("renew: %v", err)
	}
	if h, _ := b.currentHolder(ctx); h != "a" {
		t.Fatalf("holder %q", h)
	}
	// Someone deletes the key (an operator, or it expired) and b takes it: a's renewal must fail.
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.tryAcquire(ctx); !ok || err != nil {
		t.Fatalf("b after delete: %v, %v", ok, err)
	}
	if err := a.renew(ctx); !errors.Is(err, errLeaseLost) || a.valid() {
		t.Fatalf("a renewed a lease b holds: %v", err)
	}
	b.release(ctx)
	if h, _ := a.currentHolder(ctx); h != "" {
		t.Fatalf("holder %q after release", h)
	}
}

// nopPublisher accepts audit records and drops them.
type nopPublisher struct{}

func (nopPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{}, nil
}

// BenchmarkReconcile100k times one full reconcile as serve's periodic one runs it, the 100,000
// address blocks already loaded from the bucket: list Kong's plugins, plan, write. "empty": Kong
// lacks the managed plugin (one PUT of the whole list); "steady": Kong already holds it (read back
// and compared, nothing written).
func BenchmarkReconcile100k(b *testing.B) {
	const n = 100_000
	k := kongfake.New(b, kongfake.Options{})
	s := testSyncer(b, k)
	s.audit = &auditor{pub: nopPublisher{}, subject: "blockwire.audit", actor: "bench", now: time.Now}
	state := newBlockState()
	for i := range n {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		state.put("ip.=.=.=."+strings.ReplaceAll(ip, ".", "_2E"), entry{kind: "ip", value: ip, expiresAt: time.Now().Add(time.Hour)})
	}
	ctx := context.Background()
	id := PluginID("", pluginIPRestriction, Scope{})
	for _, tc := range []struct {
		name  string
		empty bool
	}{{"empty", true}, {"steady", false}} {
		b.Run(tc.name, func(b *testing.B) {
			ss := newSession(s.api)
			if _, err := s.reconcile(ctx, ss, state, nil); err != nil {
				b.Fatal(err)
			}
			var body float64
			b.ResetTimer()
			for range b.N {
				if tc.empty {
					b.StopTimer()
					k.RemovePlugin(id)
					k.ResetRequests()
					b.StartTimer()
				}
				plan, err := s.reconcile(ctx, ss, state, nil)
				if err != nil || len(plan.Ops) != map[bool]int{true: 1, false: 0}[tc.empty] {
					b.Fatalf("reconcile: %+v, %v", plan, err)
				}
				if tc.empty {
					b.StopTimer()
					for _, req := range k.Requests() {
						if req.Write() {
							body = float64(req.BodyBytes)
						}
					}
					b.StartTimer()
				}
			}
			if tc.empty {
				b.ReportMetric(body, "put-body-bytes")
				// The reference: the same PUT alone (go-kong, the fake, the same 100,000 entries),
				// what any sync must pay; the rest of a reconcile is reading, planning, comparing.
				b.StopTimer()
				p := (&planner{message: DefaultMessage}).ipRestriction(Scope{}, state.desired(time.Now()).deny[scopeRef{}])
				start := time.Now()
				for range b.N {
					if err := s.api.putPlugin(ctx, p); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "raw_put_ms")
			}
		})
	}
}

// failingRequests is an Admin API client that cannot build a request; Do counts what was sent.
type failingRequests struct{ built, sent int }

func (f *failingRequests) NewRequest(method, endpoint string, _, _ any) (*http.Request, error) {
	f.built++
	return nil, fmt.Errorf("%s %s: %w", method, endpoint, errors.New("no request for you"))
}

func (f *failingRequests) Do(context.Context, *http.Request, any) (*kong.Response, error) {
	f.sent++
	return nil, errors.New("sent")
}

// A lookup whose request cannot be built is that scope unresolved: it is not retried as if Kong
// were down, and it does not fail the reconcile (every other block still reaches Kong).
func TestLocalRequestErrorIsUnresolved(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resolve  func(context.Context, *resolver) (string, error) // the problem reported
		built    int
		contains string
	}{
		{"consumer", func(ctx context.Context, r *resolver) (string, error) {
			c, err := r.consumer(ctx, "alice")
			return c.why, err
		}, 1, `consumer "alice" cannot be looked up in Kong`},
		{"service", func(ctx context.Context, r *resolver) (string, error) {
			_, problem, err := r.scope(ctx, scopeRef{Service: "orders"})
			return problem, err
		}, 1, `service "orders" cannot be looked up in Kong`},
		{"route", func(ctx context.Context, r *resolver) (string, error) {
			_, problem, err := r.scope(ctx, scopeRef{Route: "list"})
			return problem, err
		}, 1, `route "list" cannot be looked up in Kong`},
		{"dot-dot, never built", func(ctx context.Context, r *resolver) (string, error) {
			c, err := r.consumer(ctx, "..")
			return c.why, err
		}, 0, `consumer ".." cannot be looked up in Kong`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			reqs := &failingRequests{}
			api := &admin{requests: reqs, retry: RetryPolicy{Attempts: 5, Base: time.Millisecond, Max: time.Millisecond}, m: m, log: zerolog.Nop()}
			problem, err := tc.resolve(context.Background(), newResolver(api))
			if err != nil || !strings.Contains(problem, tc.contains) {
				t.Fatalf("problem %q, err %v; want %q and no error", problem, err, tc.contains)
			}
			if reqs.built != tc.built || reqs.sent != 0 {
				t.Fatalf("%d requests built, %d sent; want %d built (no retries), none sent", reqs.built, reqs.sent, tc.built)
			}
		})
	}
}
