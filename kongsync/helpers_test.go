package kongsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

// waitFor is how long a test waits for convergence. It is generous on purpose: tests poll, and
// never fail because the machine is slow.
const waitFor = 60 * time.Second

// rig is an embedded NATS provisioned as serve does, a fake Kong, and helpers.
type rig struct {
	t     testing.TB
	srv   *natstest.Server
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	names broker.Names
	kong  *kongfake.Server
}

func newRig(t testing.TB, opts kongfake.Options) *rig {
	t.Helper()
	srv := natstest.Start(t)
	ctx := context.Background()
	b := natstest.Provisioned(t, srv.URL())
	kv, err := b.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, srv: srv, js: b.JetStream(), kv: kv, names: b.Names(), kong: kongfake.New(t, opts)}
}

// logSink collects log lines so tests can check what the sync said.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logSink) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// instance is one syncer under test.
type instance struct {
	*kongsync.Syncer
	reg  *prometheus.Registry
	logs *logSink
	nc   *nats.Conn
}

// syncer builds a Syncer with test timings on its own NATS connection (as a separate serve
// replica would have); mutate adjusts the config.
func (r *rig) syncer(kongCfg kongsync.KongConfig, mutate func(*kongsync.Config)) *instance {
	r.t.Helper()
	nc, err := nats.Connect(r.srv.URL())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	if kongCfg.URL == "" {
		kongCfg.URL = r.kong.URL()
	}
	if kongCfg.RequestTimeout == 0 {
		kongCfg.RequestTimeout = 2 * time.Second
	}
	client, err := kongsync.NewKongClient(kongCfg)
	if err != nil {
		r.t.Fatal(err)
	}
	logs := &logSink{}
	reg := prometheus.NewRegistry()
	cfg := kongsync.Config{
		Kong: client, KongURL: kongCfg.URL, JS: js, Names: r.names,
		Window: 50 * time.Millisecond, Period: time.Hour, LeaseTTL: 3 * time.Second,
		Retry:          kongsync.RetryPolicy{Attempts: 4, Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxRetryAfter: 2 * time.Second},
		FailureBackoff: 200 * time.Millisecond, AuthRetry: 300 * time.Millisecond, DBLessRecheck: 300 * time.Millisecond,
		Registry: reg, Logger: zerolog.New(logs).Level(zerolog.DebugLevel),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := kongsync.New(cfg)
	if err != nil {
		r.t.Fatalf("new syncer: %v", err)
	}
	return &instance{Syncer: s, reg: reg, logs: logs, nc: nc}
}

// run starts the syncer until the test ends (or stop is called).
func (r *rig) run(s *instance) (stop func()) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("syncer run: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// entry builds a block as the consumer stores it; ttl is the time to expiresAt.
func (r *rig) entry(kind schemas.EntityType, value string, scope *schemas.Scope, ttl time.Duration) (string, []byte) {
	r.t.Helper()
	v, err := schemas.CanonicalValue(kind, value)
	if err != nil {
		r.t.Fatal(err)
	}
	parts := schemas.KeyParts{Kind: kind, Value: v}
	b := schemas.Block{Kind: kind, Value: v, CreatedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(ttl).UTC(),
		IncidentID: "test", Source: schemas.SourceManual}
	if kind.HasName() || kind == schemas.EntityJWT {
		parts.Name, b.Name = "x-api-key", "x-api-key"
		b.Value, b.ValueSHA256 = "", strings.Repeat("ab", 32)
		parts.Value = b.ValueSHA256
	}
	if scope != nil {
		parts.Service, parts.Route = scope.Service, scope.Route
		b.Scope = scope
	}
	key, err := schemas.BlockKey(parts)
	if err != nil {
		r.t.Fatal(err)
	}
	data, _ := json.Marshal(b)
	return key, data
}

// block stores a block and returns its key.
func (r *rig) block(kind schemas.EntityType, value string, scope *schemas.Scope, ttl time.Duration) string {
	r.t.Helper()
	key, data := r.entry(kind, value, scope, ttl)
	if _, err := r.kv.Put(context.Background(), key, data); err != nil {
		r.t.Fatal(err)
	}
	return key
}

// burst stores n distinct address blocks (10.x.y.z from offset on) as fast as JetStream takes
// them: asynchronous publishes to the bucket's subjects, every ack awaited.
func (r *rig) burst(offset, n int) {
	r.t.Helper()
	// Its own connection, allowed every publish of the burst in flight: the default 4,000 stalls
	// a 10,000-block burst on a busy machine.
	nc, err := nats.Connect(r.srv.URL())
	if err != nil {
		r.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(n+1))
	if err != nil {
		r.t.Fatal(err)
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := offset; i < offset+n; i++ {
		key, data := r.entry(schemas.EntityIP, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), nil, time.Hour)
		f, err := js.PublishAsync("$KV."+r.names.BlocksBucket+"."+key, data)
		if err != nil {
			r.t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			r.t.Fatal(err)
		case <-time.After(waitFor):
			r.t.Fatal("publish ack timed out")
		}
	}
}

func (r *rig) unblock(key string) {
	r.t.Helper()
	if err := r.kv.Purge(context.Background(), key); err != nil {
		r.t.Fatal(err)
	}
}

// managed returns the plugins Kong holds with the managed tag.
func (r *rig) managed() []kongfake.Plugin {
	var out []kongfake.Plugin
	for _, p := range r.kong.Plugins() {
		if p.HasTag(kongsync.ManagedTag) {
			out = append(out, p)
		}
	}
	return out
}

// denyAt returns the deny list of the managed ip-restriction at scope, and whether there is one.
func (r *rig) denyAt(sc kongsync.Scope) ([]string, bool) {
	for _, p := range r.managed() {
		if p.Name == "ip-restriction" && p.Service == sc.Service && p.Route == sc.Route && p.Consumer == sc.Consumer {
			return p.ConfigStrings("deny"), true
		}
	}
	return nil, false
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not reached in %s; last: %s", what, waitFor, last)
}

// metric sums the samples of a metric family whose labels include want.
func metric(t testing.TB, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	sample:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue sample
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// audits returns the detail of every audit record of an action stored so far.
func (r *rig) audits(action schemas.Action) []string {
	r.t.Helper()
	ctx := context.Background()
	cons, err := r.js.OrderedConsumer(ctx, r.names.AuditStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{r.names.AuditSubject + "." + string(action)},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
		if err != nil {
			return out
		}
		var rec schemas.AuditRecord
		if err := json.Unmarshal(msg.Data(), &rec); err != nil {
			r.t.Fatal(err)
		}
		if rec.Action != action || rec.Actor == "" {
			r.t.Fatalf("audit record %+v", rec)
		}
		out = append(out, rec.Detail)
	}
}

// writes counts the write requests Kong received.
func writes(k *kongfake.Server) int {
	return k.Count(func(r kongfake.Request) bool { return r.Write() })
}

// status reads the stored status.
func (r *rig) status() (*kongsync.Status, error) {
	return kongsync.ReadStatus(context.Background(), r.js, "", "")
}

// leaseHolder reads who holds the Kong sync lease ("" for nobody).
func (r *rig) leaseHolder() string {
	r.t.Helper()
	ctx := context.Background()
	kv, err := r.js.KeyValue(ctx, kongsync.DefaultLeaseBucket)
	if err != nil {
		r.t.Fatal(err)
	}
	e, err := kv.Get(ctx, "kongsync")
	if err != nil {
		return ""
	}
	var v struct {
		Holder string `json:"holder"`
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		r.t.Fatal(err)
	}
	return v.Holder
}

func header(name, value string) string { return fmt.Sprintf("%s: %s", name, value) }
