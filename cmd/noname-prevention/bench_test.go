package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

// benchRequest is an ordinary allowed request: a handful of headers, a bearer token, a
// cookie, a query string and an authenticated consumer, from an address that is not blocked.
func benchRequest(tb testing.TB) kongdriver.Request {
	tok := jwtWith(tb, `{"iss":"https://idp.example","sub":"alice","aud":"api","iat":1700000000,"exp":1900000000}`)
	return kongdriver.Request{
		ClientIP: "198.18.0.1", Method: "GET", Path: "/v1/items", RawQuery: "page=2&sort=asc",
		Headers: map[string][]string{
			"host": {"api.example"}, "user-agent": {"bench/1.0"}, "accept": {"application/json"},
			"authorization": {"Bearer " + tok}, "cookie": {"theme=dark; session_id=abc123"}, "x-api-key": {"k-123"},
		},
		Consumer: &kongdriver.Consumer{ID: "c-1", Username: "alice"},
	}
}

// everyKindBucket is a second bucket holding blocks of every kind (none matching
// benchRequest), for the benchmark where every lookup runs.
func everyKindBucket(tb testing.TB, s *store) string {
	tb.Helper()
	const bucket = "bench_every"
	ctx := context.Background()
	kv, err := s.b.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		tb.Fatal(err)
	}
	put := func(p schemas.KeyParts) {
		key, err := schemas.BlockKey(p)
		if err != nil {
			tb.Fatal(err)
		}
		v := fmt.Sprintf(`{"kind":%q,"expiresAt":%q}`, p.Kind, time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339Nano))
		if _, err := kv.PutString(ctx, key, v); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range 1000 {
		put(schemas.KeyParts{Kind: "ip", Value: benchAddr(i).String()})
		put(schemas.KeyParts{Kind: "cidr", Value: fmt.Sprintf("100.%d.%d.0/24", i>>8, i&255)})
		put(schemas.KeyParts{Kind: "header", Name: "x-api-key", Value: sha256Hex(fmt.Sprint("key-", i))})
		put(schemas.KeyParts{Kind: "cookie", Name: "session_id", Value: sha256Hex(fmt.Sprint("sess-", i))})
		put(schemas.KeyParts{Kind: "query", Name: "token", Value: sha256Hex(fmt.Sprint("tok-", i))})
		put(schemas.KeyParts{Kind: "jwt", Name: "sub", Value: fmt.Sprint("user-", i)})
		put(schemas.KeyParts{Kind: "consumer", Value: fmt.Sprint("consumer-", i)})
	}
	return bucket
}

// subject is one plugin instance under load, with what it costs.
type subject struct {
	name  string
	inst  *kongdriver.Instance
	calls int
	total time.Duration
	n     int
}

// drive sends n copies of req through inst with conc in flight and returns the wall time.
func drive(b *testing.B, s *subject, req kongdriver.Request, n, conc int) {
	ctx := context.Background()
	check := func(res *kongdriver.Result, err error) {
		if err != nil {
			b.Error(err)
			return
		}
		if !res.Allowed || len(res.Calls) != s.calls {
			b.Errorf("%s: %+v, want allowed with %d calls", s.name, res, s.calls)
		}
	}
	start := time.Now()
	if conc == 1 {
		for range n {
			check(s.inst.Access(ctx, req))
		}
	} else {
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					check(s.inst.Access(ctx, req))
				}
			})
		}
		wg.Wait()
	}
	s.total += time.Since(start)
	s.n += n
}

// BenchmarkDriver measures requests through Kong's plugin protocol: the enforcer against
// the calls reference plugin making the same PDK calls, and against noop (the protocol's
// floor). The three run interleaved in rounds, so the machine's noise hits them alike; the
// ratios (x-ref, x-noop) are the figures to read. ns/op and req/s are the enforcer's.
func BenchmarkDriver(b *testing.B) {
	s := sharedStore(b)
	every := everyKindBucket(b, s)
	enf := startPlugin(b, "bench-plugin", pluginEnv(s.url(), "off", "BLOCKWIRE_ENFORCER_LOG_LEVEL=warn")...)
	calls := startPlugin(b, "calls")
	noop := startPlugin(b, "noop")
	req := benchRequest(b)

	scenarios := []struct {
		name      string
		config    map[string]any
		refCalls  []string
		wantCalls int
	}{
		{"ip-only", nil, []string{"forwarded_ip"}, 1},
		{"every-kind", map[string]any{"bucket": every}, []string{"forwarded_ip", "headers", "raw_query", "consumer"}, 4},
	}
	for _, sc := range scenarios {
		inst := enf.instance(b, sc.config)
		// Wait for the enforcer's block list: before it, requests cost no PDK call.
		deadline := time.Now().Add(5 * time.Minute)
		for res := access(b, inst, req); len(res.Calls) != sc.wantCalls; res = access(b, inst, req) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: the enforcer never synced (calls %v)", sc.name, res.Calls)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/conc%d", sc.name, conc), func(b *testing.B) {
				subjects := []*subject{
					{name: "enforcer", inst: inst, calls: sc.wantCalls},
					{name: "calls", inst: calls.instance(b, map[string]any{"calls": sc.refCalls}), calls: len(sc.refCalls)},
					{name: "noop", inst: noop.instance(b, nil)},
				}
				round := 500
				if conc > 1 {
					round = 64 * 20
				}
				for done, r := 0, 0; done < b.N; r++ {
					k := min(round, b.N-done)
					for i := range subjects {
						drive(b, subjects[(i+r)%len(subjects)], req, k, conc) // rotate who goes first
					}
					done += k
				}
				per := func(s *subject) float64 { return float64(s.total.Nanoseconds()) / float64(s.n) }
				e, c, n := per(subjects[0]), per(subjects[1]), per(subjects[2])
				b.ReportMetric(e, "ns/op")
				b.ReportMetric(1e9/e, "req/s")
				b.ReportMetric(1e9/c, "ref-req/s")
				b.ReportMetric(1e9/n, "noop-req/s")
				b.ReportMetric(e/c, "x-ref")
				b.ReportMetric(e/n, "x-noop")
				b.ReportMetric(float64(sc.wantCalls), "calls/op")
			})
		}
	}
}

// peakRSS is the plugin process's peak resident memory (VmHWM) in MiB.
func peakRSS(tb testing.TB, pid int) float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	tb.Fatal("no VmHWM in /proc status")
	return 0
}

// untilBlocked polls inst every pause until addr is refused and returns how long that took
// since start.
func untilBlocked(tb testing.TB, inst *kongdriver.Instance, addr string, start time.Time, pause time.Duration) time.Duration {
	tb.Helper()
	d, _, _ := untilRefused(tb, inst, addr, start, pause)
	return d
}

// untilRefused is untilBlocked that also returns how long the refusing request took itself
// and how many requests were sent, the refusing one included.
func untilRefused(tb testing.TB, inst *kongdriver.Instance, addr string, start time.Time, pause time.Duration) (since, probe time.Duration, sent int) {
	tb.Helper()
	req := kongdriver.Request{ClientIP: addr}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		at := time.Now()
		sent++
		if res := access(tb, inst, req); res.Status == 403 {
			now := time.Now()
			return now.Sub(start), now.Sub(at), sent
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never blocked", addr)
		}
		time.Sleep(pause)
	}
}

// BenchmarkColdStart measures a plugin process from its start until it enforces the whole
// bucket: synced from the KV (no snapshot), then, after a shutdown that writes the snapshot,
// from the snapshot alone with NATS unreachable. Reported: seconds and peak RSS of each.
func BenchmarkColdStart(b *testing.B) {
	s := sharedStore(b)
	b.Logf("%d blocks in the bucket (filled in %s)", s.blocks, s.filling)
	var kvTime, snapTime time.Duration
	var kvMem, snapMem float64
	for i := 0; i < b.N; i++ {
		snap := filepath.Join(b.TempDir(), "snap")
		start := time.Now()
		p := startPlugin(b, "bench-plugin", pluginEnv(s.url(), snap, "BLOCKWIRE_ENFORCER_LOG_LEVEL=info")...)
		kvTime += untilBlocked(b, p.instance(b, nil), s.lastIP, start, 2*time.Millisecond)
		kvMem += peakRSS(b, p.d.Pid())
		if err := p.d.Close(); err != nil { // SIGTERM: writes the snapshot
			b.Fatal(err)
		}

		start = time.Now()
		p = startPlugin(b, "bench-plugin", pluginEnv(deadURL(b), snap, "BLOCKWIRE_ENFORCER_LOG_LEVEL=info")...)
		snapTime += untilBlocked(b, p.instance(b, nil), s.lastIP, start, 2*time.Millisecond)
		snapMem += peakRSS(b, p.d.Pid())
		if err := p.d.Close(); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(kvTime.Seconds()/n, "kv-sync-s")
	b.ReportMetric(kvMem/n, "kv-peak-MiB")
	b.ReportMetric(snapTime.Seconds()/n, "snapshot-s")
	b.ReportMetric(snapMem/n, "snapshot-peak-MiB")
	b.ReportMetric(float64(s.blocks), "blocks")
	b.ReportMetric((kvTime+snapTime).Seconds()*1e9/n, "ns/op")
}

// The references BenchmarkPropagation sets its p99 beside without measuring them: each
// product's documented default, that is how stale a new block can be at worst with it.
const (
	// CrowdSec's remediation components in stream mode poll the Local API for new decisions
	// every 10 s by default (crowdsec-firewall-bouncer's update_frequency, the nginx/OpenResty
	// bouncer's UPDATE_FREQUENCY).
	crowdsecPoll = 10 * time.Second
	// Kong's nodes look for changed entities in the database every db_update_frequency, 5 s by
	// default (kong.conf), so a block written through one node's Admin API (an ip-restriction
	// change, say) can take that long to reach the others.
	kongDBUpdate = 5 * time.Second
)

var propagationSeq atomic.Int64

// seqAddr is the i-th address of the /10 starting at 100.<second>.0.0 (i wraps at 4M).
func seqAddr(second, i int64) string {
	return fmt.Sprintf("100.%d.%d.%d", second+i>>16&63, i>>8&255, i&255)
}

// BenchmarkPropagation measures, per op, one new IP block from the webhook's 202 to the
// plugin refusing that address, with the shared bucket's blocks already loaded. The webhook
// and the consumer run in this process, the plugin in its own, as in production.
//
//   - idle: nothing else runs.
//   - load64: 64 driver connections keep sending allowed requests (each from its own
//     unblocked address) through the same plugin instance, as fast as it answers, for the
//     whole sub-benchmark; load-req/s is their rate while the blocks were measured.
//
// The address is polled with a request every 250µs, so each figure ends with the round trip of
// the refusing request, queued behind the load's in load64: probe-p50-ms is that round trip's
// median, probes/op the requests sent per block, the refusing one included (1: the first
// request after the 202 was already refused).
//
// The reference, measured in the same run under the same load and interleaved op by op (which
// of the two goes first alternates): the raw KV watch, one bare Put on the same bucket and
// server received by a bare WatchAll on its own connection in this process, timed from the
// Put's call to the watcher's receipt. x-raw-watch is our p50 over its p50: what the webhook,
// the stream, the consumer, the plugin's apply and the refused request add to one KV hop.
// p99-per-crowdsec-10s and p99-per-kong-5s set our p99 beside crowdsecPoll and kongDBUpdate,
// documented defaults, not measured here.
func BenchmarkPropagation(b *testing.B) {
	s := sharedStore(b)
	pr := &propagation{s: s, st: propagationPipeline(b, s), raw: newRawWatch(b, s)}
	p := startPlugin(b, "bench-plugin", pluginEnv(s.url(), "off", "BLOCKWIRE_ENFORCER_LOG_LEVEL=warn")...)
	pr.inst = p.instance(b, nil)
	untilBlocked(b, pr.inst, s.lastIP, time.Now(), 2*time.Millisecond)

	b.Run("idle", func(b *testing.B) { pr.run(b) })
	b.Run("load64", func(b *testing.B) {
		l := startLoad(b, pr.inst, 64)
		pr.run(b)
		b.ReportMetric(l.stop(b), "load-req/s")
	})
}

// propagationPipeline starts the webhook and the consumer on the shared store.
func propagationPipeline(b *testing.B, s *store) *stack {
	ctx := context.Background()
	st := &stack{b: s.b}
	h, err := webhook.New(webhook.Config{
		Publisher: s.b.JetStream(), Ready: s.b, Connected: s.b.Conn().IsConnected,
		Auth:     webhook.AuthConfig{Tokens: []string{webhookToken}},
		Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	st.url = serveHTTP(b, h)
	c, err := consumer.New(ctx, consumer.Config{
		JS: s.b.JetStream(), Conn: s.b.Conn(), Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(),
		Guardrails: consumer.Guardrails{MaxActiveBlocks: 100_000_000}, // the preloaded blocks count too
	})
	if err != nil {
		b.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return st
}

// propagation is what BenchmarkPropagation's sub-benchmarks share.
type propagation struct {
	s    *store
	st   *stack
	raw  *rawWatch
	inst *kongdriver.Instance
}

// run measures b.N blocks through the pipeline and b.N raw puts, interleaved, and reports both.
func (pr *propagation) run(b *testing.B) {
	ours := make([]time.Duration, 0, b.N)
	probes := make([]time.Duration, 0, b.N) // the refusing request's own round trip, part of ours
	raw := make([]time.Duration, 0, b.N)
	polls := 0
	through := func(i int64) {
		addr := seqAddr(64, i) // 100.64.0.0/10: not among the preloaded blocks
		pr.st.post(b, incident(fmt.Sprintf("prop-%d-%d", os.Getpid(), i), schemas.TypeBlock, 3600, nil, ipEntity(addr)))
		// Polled every 250µs: finer than the figures, without starving the pipeline of CPU.
		d, probe, n := untilRefused(b, pr.inst, addr, time.Now(), 250*time.Microsecond)
		ours, probes, polls = append(ours, d), append(probes, probe), polls+n
	}
	bare := func(i int64) {
		raw = append(raw, pr.raw.roundTrip(b, seqAddr(128, i))) // 100.128.0.0/10: nobody else's
	}
	for n := range b.N {
		i := propagationSeq.Add(1)
		if n%2 == 0 {
			through(i)
			bare(i)
		} else {
			bare(i)
			through(i)
		}
	}

	var sum time.Duration
	for _, l := range ours {
		sum += l
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(ours)), "ns/op") // the mean; the quantiles follow
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
	p50, p99, worst := quantiles(ours)
	rawP50, rawP99, _ := quantiles(raw)
	probeP50, _, _ := quantiles(probes)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(worst), "max-ms")
	b.ReportMetric(float64(pr.s.blocks), "blocks")
	b.ReportMetric(ms(probeP50), "probe-p50-ms")
	b.ReportMetric(float64(polls)/float64(b.N), "probes/op")
	b.ReportMetric(ms(rawP50), "raw-watch-p50-ms")
	b.ReportMetric(ms(rawP99), "raw-watch-p99-ms")
	b.ReportMetric(float64(p50)/float64(rawP50), "x-raw-watch")
	b.ReportMetric(float64(p99)/float64(crowdsecPoll), "p99-per-crowdsec-10s")
	b.ReportMetric(float64(p99)/float64(kongDBUpdate), "p99-per-kong-5s")
}

// quantiles sorts lat and returns its p50, p99 and max.
func quantiles(lat []time.Duration) (p50, p99, worst time.Duration) {
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
	return q(0.5), q(0.99), lat[len(lat)-1]
}

// rawWatch is the reference of BenchmarkPropagation: a bare KV put and a bare watch.
type rawWatch struct {
	kv   jetstream.KeyValue // puts go through the broker's connection, as the consumer's writes
	mu   sync.Mutex
	wait map[string]chan time.Time // key → its receipt time, for the put under way
}

// newRawWatch watches the blocks bucket on a connection of its own, updates only (not the
// million entries already there), until the benchmark ends.
func newRawWatch(b *testing.B, s *store) *rawWatch {
	ctx := context.Background()
	put, err := s.b.Blocks(ctx)
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(s.url(), nats.Name("bench-raw-watch"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, s.b.Names().BlocksBucket)
	if err != nil {
		b.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	r := &rawWatch{kv: put, wait: map[string]chan time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() { // every change, the pipeline's too: drained, never backed up
			if e == nil {
				continue
			}
			at := time.Now()
			r.mu.Lock()
			ch, ok := r.wait[e.Key()]
			delete(r.wait, e.Key())
			r.mu.Unlock()
			if ok {
				ch <- at
			}
		}
	}()
	b.Cleanup(func() { _ = w.Stop(); <-done }) // Stop closes Updates
	return r
}

// roundTrip puts a block for addr and returns how long after the Put's call the watch had it.
func (r *rawWatch) roundTrip(b *testing.B, addr string) time.Duration {
	key, err := schemas.BlockKey(schemas.KeyParts{Kind: schemas.EntityIP, Value: addr})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	data, err := json.Marshal(schemas.Block{Kind: schemas.EntityIP, Value: addr, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		IncidentID: "bench-raw", IncidentIDs: []string{"bench-raw"}, Title: "raw watch reference", Severity: schemas.SeverityHigh,
		Source: schemas.SourceManual})
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	r.wait[key] = ch
	r.mu.Unlock()
	start := time.Now()
	if _, err := r.kv.Put(context.Background(), key, data); err != nil {
		b.Fatal(err)
	}
	select {
	case at := <-ch:
		return at.Sub(start)
	case <-time.After(time.Minute):
		b.Fatalf("the raw watch never received %s", key)
		return 0
	}
}

// load keeps conc connections sending allowed requests through one plugin instance.
type load struct {
	stopped  atomic.Bool
	wg       sync.WaitGroup
	requests atomic.Int64
	failures atomic.Int64
	start    time.Time
	from     int64
	once     sync.Once
	rate     float64
}

// startLoad starts the load and returns once every connection has answered, its rate counted
// from there.
func startLoad(b *testing.B, inst *kongdriver.Instance, conc int) *load {
	l := &load{}
	var ready sync.WaitGroup
	ready.Add(conc)
	for g := range conc {
		req := kongdriver.Request{ClientIP: fmt.Sprintf("198.18.%d.%d", g>>8, g&255), Method: "GET", Path: "/v1/items"} // 198.18.0.0/15: never blocked
		l.wg.Go(func() {
			first := true
			for !l.stopped.Load() {
				res, err := inst.Access(context.Background(), req)
				switch {
				case err != nil:
					if l.failures.Add(1) <= 3 {
						b.Errorf("load: %v", err)
					}
				case !res.Allowed:
					if l.failures.Add(1) <= 3 {
						b.Errorf("load: %s refused: %+v", req.ClientIP, res)
					}
				default:
					l.requests.Add(1)
				}
				if first {
					first = false
					ready.Done()
				}
			}
		})
	}
	b.Cleanup(func() { l.stop(b) }) // a failed benchmark still stops it
	ready.Wait()
	l.start, l.from = time.Now(), l.requests.Load()
	return l
}

// stop ends the load, waits for its requests in flight and returns its rate (requests/s)
// from startLoad's return until now.
func (l *load) stop(b *testing.B) float64 {
	l.once.Do(func() {
		l.stopped.Store(true)
		l.rate = float64(l.requests.Load()-l.from) / time.Since(l.start).Seconds()
		l.wg.Wait()
		if n := l.failures.Load(); n > 0 {
			b.Errorf("load: %d failed requests", n)
		}
	})
	return l.rate
}
