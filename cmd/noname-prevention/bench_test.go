package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/schemas"
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
