package kongsync_test

import (
	"context"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
)

// denyCount reads how many entries the managed global deny list has, without copying Kong.
func denyCount(k *kongfake.Server) int {
	p, ok := k.Plugin(kongsync.PluginID("", "ip-restriction", kongsync.Scope{}))
	if !ok {
		return 0
	}
	list, _ := p.Config["deny"].([]any)
	return len(list)
}

// BenchmarkBurst10k: a running sync (default 250 ms window) sees 10,000 address blocks stored as
// fast as JetStream takes them; timed from the first store until Kong's deny list holds all of
// them. Reports Admin API writes (goal: at most 20) and the time to converge.
func BenchmarkBurst10k(b *testing.B) {
	const n = 10_000
	var writesTotal, burstTotal float64
	for range b.N {
		b.StopTimer()
		r := newRig(b, kongfake.Options{})
		s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) { c.Window = kongsync.DefaultWindow })
		stop := r.run(s)
		eventually(b, "first reconcile", func() (bool, string) {
			return metric(b, s.reg, "blockwire_kongsync_reconciles_total", map[string]string{"result": "ok"}) >= 1, ""
		})
		r.kong.ResetRequests()
		b.StartTimer()
		start := time.Now()
		r.burst(0, n)
		burstTotal += time.Since(start).Seconds()
		for denyCount(r.kong) < n {
			time.Sleep(5 * time.Millisecond)
		}
		b.StopTimer()
		writesTotal += float64(writes(r.kong))
		stop()
	}
	b.ReportMetric(writesTotal/float64(b.N), "writes/op")
	b.ReportMetric(n, "blocks/op") // the reference: one write per block without coalescing
	b.ReportMetric(burstTotal/float64(b.N)*1000, "burst-ms/op")
}

// BenchmarkFullReconcile100k: one full reconcile (blockwire kongsync --once) with 100,000 address
// blocks in the bucket: read the bucket, read Kong, plan, write. "empty" starts from a Kong
// without the managed plugin (one PUT of the whole list); "steady" from a Kong already equal
// (read back and compared, nothing written). Reports the PUT body size.
func BenchmarkFullReconcile100k(b *testing.B) {
	const n = 100_000
	r := newRig(b, kongfake.Options{})
	r.burst(0, n)
	s := r.syncer(kongsync.KongConfig{RequestTimeout: time.Minute}, nil)
	ctx := context.Background()
	id := kongsync.PluginID("", "ip-restriction", kongsync.Scope{})

	b.Run("empty", func(b *testing.B) {
		var body float64
		for range b.N {
			b.StopTimer()
			r.kong.RemovePlugin(id)
			r.kong.ResetRequests()
			b.StartTimer()
			plan, err := s.Once(ctx, false)
			if err != nil || len(plan.Ops) != 1 {
				b.Fatalf("once: %+v, %v", plan, err)
			}
			b.StopTimer()
			if denyCount(r.kong) != n {
				b.Fatalf("deny list has %d entries, want %d", denyCount(r.kong), n)
			}
			for _, req := range r.kong.Requests() {
				if req.Write() {
					body = float64(req.BodyBytes)
				}
			}
			b.StartTimer()
		}
		b.ReportMetric(body, "put-body-bytes")
	})
	b.Run("steady", func(b *testing.B) {
		if _, err := s.Once(ctx, false); err != nil { // converge first when run alone
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			plan, err := s.Once(ctx, false)
			if err != nil || len(plan.Ops) != 0 {
				b.Fatalf("once: %+v, %v", plan, err)
			}
		}
	})
}
