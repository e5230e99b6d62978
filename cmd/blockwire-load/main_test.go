package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func msd(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// durations returns 1ms, 2ms, ... n ms.
func durations(n int) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Millisecond
	}
	return ds
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value p50", []time.Duration{msd(7)}, 50, msd(7)},
		{"one value p99", []time.Duration{msd(7)}, 99, msd(7)},
		{"one value p0 clamps to min", []time.Duration{msd(7)}, 0, msd(7)},
		{"two values p50 is the lower", []time.Duration{msd(1), msd(2)}, 50, msd(1)},
		{"two values p51 is the upper", []time.Duration{msd(1), msd(2)}, 51, msd(2)},
		{"1..100 p50", durations(100), 50, msd(50)},
		{"1..100 p90", durations(100), 90, msd(90)},
		{"1..100 p99", durations(100), 99, msd(99)},
		{"1..100 p100 is max", durations(100), 100, msd(100)},
		{"1..100 p above 100 clamps to max", durations(100), 150, msd(100)},
		{"1..10 p99 rounds the rank up", durations(10), 99, msd(10)},
		{"1..10 p50", durations(10), 50, msd(5)},
		{"1..1000 p99.9", durations(1000), 99.9, msd(999)},
		{"1..1000 p99", durations(1000), 99, msd(990)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{3}, 3},
		{"odd unsorted", []float64{9, 1, 5}, 5},
		{"even takes the mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"outlier does not move it", []float64{100, 101, 5000}, 101},
		{"ties", []float64{2, 2, 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.xs...)
			if got := median(tt.xs); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.xs[i] {
					t.Fatalf("median sorted its argument: %v", tt.xs)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name      string
		status    []int
		latency   []time.Duration
		elapsed   time.Duration
		want      summary
		wantByKey map[string]int
	}{
		{
			name:    "all accepted",
			status:  []int{202, 202, 202, 202},
			latency: []time.Duration{msd(4), msd(1), msd(3), msd(2)},
			elapsed: 2 * time.Second,
			want: summary{Requests: 4, Accepted: 4, AcceptedPerSec: 2, Seconds: 2,
				P50: msd(2), P90: msd(4), P99: msd(4), Max: msd(4)},
		},
		{
			name:   "errors are counted by status and left out of the latencies",
			status: []int{202, 503, 202, 401, 0, 503, 202, 202, 202, 202},
			latency: []time.Duration{msd(10), msd(1000), msd(20), msd(0.1), msd(30000), msd(900),
				msd(30), msd(40), msd(50), msd(60)},
			elapsed: time.Second,
			want: summary{Requests: 10, Accepted: 6, Errors: 4, ErrorRate: 0.4, AcceptedPerSec: 6, Seconds: 1,
				P50: msd(30), P90: msd(60), P99: msd(60), Max: msd(60)},
			wantByKey: map[string]int{"503": 2, "401": 1, "transport": 1},
		},
		{
			name:    "nothing accepted",
			status:  []int{500, 500},
			latency: []time.Duration{msd(1), msd(2)},
			elapsed: time.Second,
			want:    summary{Requests: 2, Errors: 2, ErrorRate: 1, Seconds: 1},
			wantByKey: map[string]int{
				"500": 2,
			},
		},
		{
			name: "empty run",
			want: summary{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(result{target: "x", run: 1, status: tt.status, latency: tt.latency, elapsed: tt.elapsed})
			if len(got.ErrorsByStatus) != len(tt.wantByKey) {
				t.Errorf("ErrorsByStatus = %v, want %v", got.ErrorsByStatus, tt.wantByKey)
			}
			for k, v := range tt.wantByKey {
				if got.ErrorsByStatus[k] != v {
					t.Errorf("ErrorsByStatus[%q] = %d, want %d", k, got.ErrorsByStatus[k], v)
				}
			}
			got.ErrorsByStatus = nil
			tt.want.Target, tt.want.Run = "x", 1
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("summarize =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestMedianOf(t *testing.T) {
	runs := []summary{
		{Target: "webhook", Run: 1, Requests: 100, Accepted: 100, AcceptedPerSec: 900, Seconds: 1.2,
			P50: msd(3), P90: msd(6), P99: msd(20), Max: msd(50)},
		{Target: "webhook", Run: 2, Requests: 100, Accepted: 98, Errors: 2, ErrorsByStatus: map[string]int{"503": 2},
			AcceptedPerSec: 1000, Seconds: 1.0, P50: msd(2), P90: msd(5), P99: msd(9), Max: msd(30)},
		{Target: "webhook", Run: 3, Requests: 100, Accepted: 99, Errors: 1, ErrorsByStatus: map[string]int{"503": 1},
			AcceptedPerSec: 100, Seconds: 9.9, P50: msd(40), P90: msd(80), P99: msd(99), Max: msd(120)},
	}
	m := medianOf(runs)
	want := summary{Target: "webhook", Requests: 300, Accepted: 297, Errors: 3, ErrorRate: 0.01,
		AcceptedPerSec: 900, Seconds: 1.2, P50: msd(3), P90: msd(6), P99: msd(20), Max: msd(50)}
	if m.ErrorsByStatus["503"] != 3 || len(m.ErrorsByStatus) != 1 {
		t.Errorf("ErrorsByStatus = %v, want 503:3", m.ErrorsByStatus)
	}
	m.ErrorsByStatus = nil
	if !reflect.DeepEqual(m, want) {
		t.Errorf("medianOf =\n%+v\nwant\n%+v", m, want)
	}

	// Each metric is its own median: the fastest run need not have the best p99.
	m = medianOf([]summary{
		{AcceptedPerSec: 10, P99: msd(1)}, {AcceptedPerSec: 20, P99: msd(3)},
		{AcceptedPerSec: 30, P99: msd(2)}, {AcceptedPerSec: 40, P99: msd(4)},
	})
	if m.AcceptedPerSec != 25 || m.P99 != msd(2.5) {
		t.Errorf("even medianOf: accepted/s %v p99 %v, want 25 and 2.5ms", m.AcceptedPerSec, m.P99)
	}
	if got := medianOf(nil); got.Requests != 0 || got.AcceptedPerSec != 0 {
		t.Errorf("medianOf(nil) = %+v", got)
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"MemTotal:       24684084 kB\nMemFree:  1 kB\n", 24684084 * 1024},
		{"MemFree:  1 kB\nMemTotal: 2 kB\n", 2048},
		{"MemTotal: 512\n", 512},
		{"MemFree: 1 kB\n", 0},
		{"MemTotal: lots kB\n", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := parseMemTotal(strings.NewReader(tt.in)); got != tt.want {
			t.Errorf("parseMemTotal(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestCommandLineRedactsToken(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"blockwire-load", "-c", "64"}, "blockwire-load -c 64"},
		{[]string{"blockwire-load", "-token", "s3cret", "-n", "10"}, "blockwire-load -token REDACTED -n 10"},
		{[]string{"blockwire-load", "-token=s3cret"}, "blockwire-load -token=REDACTED"},
		{[]string{"blockwire-load", "--token=s3cret"}, "blockwire-load --token=REDACTED"},
		{[]string{"blockwire-load", "-url", "http://h:1/a b"}, "blockwire-load -url 'http://h:1/a b'"},
		{[]string{"x", "it's"}, `x 'it'\''s'`},
		{[]string{"x", ""}, "x ''"},
	}
	for _, tt := range tests {
		if got := commandLine(tt.args); got != tt.want {
			t.Errorf("commandLine(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestIncidentBodies(t *testing.T) {
	for _, k := range []int{1, 2, 3, 6, 11} {
		t.Run(fmt.Sprint(k, " entities"), func(t *testing.T) {
			bodies := incidentBodies("load-t-r01", 300, k)
			ids := map[string]bool{}
			ips := map[string]bool{}
			for _, b := range bodies {
				var inc incident
				if err := json.Unmarshal(b, &inc); err != nil {
					t.Fatal(err)
				}
				if ids[inc.ID] {
					t.Fatalf("duplicate id %s", inc.ID)
				}
				ids[inc.ID] = true
				if len(inc.Entities) != k {
					t.Fatalf("%d entities, want %d", len(inc.Entities), k)
				}
				if inc.Entities[0].Type != "ip" || ips[inc.Entities[0].Value] {
					t.Fatalf("first entity %+v is not a fresh IP", inc.Entities[0])
				}
				ips[inc.Entities[0].Value] = true
				for _, e := range inc.Entities {
					named := e.Type == "header" || e.Type == "cookie" || e.Type == "query"
					if e.Value == "" || named != (e.Name != "") {
						t.Fatalf("invalid entity %+v", e)
					}
				}
			}
		})
	}
}

func TestBenchIP(t *testing.T) {
	tests := []struct {
		i    int
		want string
	}{
		{0, "198.18.0.0"},
		{1, "198.18.0.1"},
		{256, "198.18.1.0"},
		{65536, "198.19.0.0"},
		{131071, "198.19.255.255"},
		{131072, "198.18.0.0"},
	}
	for _, tt := range tests {
		if got := benchIP(tt.i); got != tt.want {
			t.Errorf("benchIP(%d) = %s, want %s", tt.i, got, tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	t.Setenv("BLOCKWIRE_WEBHOOK_TOKEN", "from-env")
	cfg, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "http://127.0.0.1:8080" || cfg.NATSURL != "nats://127.0.0.1:4222" || cfg.Token != "from-env" ||
		cfg.Concurrency != 64 || cfg.Requests != 20000 || cfg.Warmup != 1000 || cfg.Runs != 3 ||
		cfg.Target != "both" || cfg.JSON || cfg.Entities != 2 {
		t.Errorf("defaults = %+v", cfg)
	}
	for _, bad := range [][]string{{"-c", "0"}, {"-n", "0"}, {"-runs", "0"}, {"-warmup", "-1"},
		{"-entities", "0"}, {"-entities", "1001"}, {"-target", "all"}, {"extra"}} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestLoadAvg1(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		want    float64
	}{
		{"4.88 4.09 1.93 3/612 20306\n", 4.88},
		{"0.00 0.01 0.05 1/100 1\n", 0},
		{"", -1},
		{"x 1 2\n", -1},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := loadAvg1(p); got != tt.want {
			t.Errorf("loadAvg1(%q) = %v, want %v", tt.content, got, tt.want)
		}
	}
	if got := loadAvg1(filepath.Join(dir, "missing")); got != -1 {
		t.Errorf("loadAvg1(missing) = %v, want -1", got)
	}
}
