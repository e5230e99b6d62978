package kongdriver

import (
	"context"
	"runtime"
	"testing"
)

// The benchmarks measure one access event per op through the real go-pdk server: noop is the
// protocol's floor, calls adds PDK round trips. "serial" is one request at a time (latency);
// "parallel64" keeps 64 requests in flight (throughput, as under load in Kong).

func BenchmarkAccessNoop(b *testing.B) { benchAccess(b, "noop", nil, 0) }

func BenchmarkAccessCalls1(b *testing.B) {
	benchAccess(b, "calls", map[string]any{"calls": []string{"forwarded_ip"}}, 1)
}

func BenchmarkAccessCalls3(b *testing.B) {
	benchAccess(b, "calls", map[string]any{"calls": []string{"forwarded_ip", "header:x-api-key", "raw_query"}}, 3)
}

func benchAccess(b *testing.B, plugin string, config map[string]any, wantCalls int) {
	d := startDriver(b, plugin)
	inst := startInstance(b, d, config)
	// No timeout here: with -count the sub-benchmarks repeat under this one context for minutes.
	ctx := context.Background()
	req := Request{
		ClientIP: "203.0.113.7", Method: "GET", Path: "/v1/items", RawQuery: "page=2",
		Headers: map[string][]string{"x-api-key": {"k-123"}, "user-agent": {"bench"}},
	}
	check := func(b *testing.B, res *Result, err error) bool {
		if err != nil {
			b.Error(err)
			return false
		}
		if !res.Allowed || len(res.Calls) != wantCalls {
			b.Errorf("result %+v, want allowed with %d calls", res, wantCalls)
			return false
		}
		return true
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := inst.Access(ctx, req)
			if !check(b, res, err) {
				return
			}
		}
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((64 + procs - 1) / procs)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res, err := inst.Access(ctx, req)
				if !check(b, res, err) {
					return
				}
			}
		})
	})
}
