package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
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
