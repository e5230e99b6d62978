package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `goos: linux
pkg: github.com/blockwire/blockwire/consumer
BenchmarkApply-2   	       3	 556805964 ns/op	     35919 entities/s	         0.3600 ratio	     99775 raw_puts/s
PASS
pkg: github.com/blockwire/blockwire/cmd/noname-prevention
BenchmarkPropagation/load64-2       	    1000	   2988876 ns/op	     20000 blocks	     39994 load-req/s	        14.13 max-ms	         2.559 p50-ms	         9.951 p99-ms	         0.0009951 p99-per-crowdsec-10s	         0.001990 p99-per-kong-5s	         2.366 probe-p50-ms	         1.176 probes/op	         0.3314 raw-watch-p50-ms	         3.526 raw-watch-p99-ms	         7.722 x-raw-watch	  789008 B/op	    9228 allocs/op
BenchmarkDriver/ip-only/conc1   	       1	    250683 ns/op	         1.000 calls/op	      3989 req/s	         0.9929 x-ref
PASS
median of 3 run(s) per target (each metric separately):
     target  accepted/s     p50      p99  errors
    webhook     16029.5  3.47ms  11.87ms       0
  reference     14069.9  4.17ms  11.58ms       0
ratio webhook/reference = 1.14 (accepted/s)
`
	rows := parse(strings.NewReader(in))
	want := []row{
		{pkg: "consumer", name: "Apply", metrics: []string{"556805964 ns/op", "35919 entities/s", "0.3600 ratio", "99775 raw_puts/s"}},
		{pkg: "cmd/noname-prevention", name: "Propagation/load64", metrics: []string{"2988876 ns/op", "20000 blocks", "39994 load-req/s",
			"14.13 max-ms", "2.559 p50-ms", "9.951 p99-ms", "0.0009951 p99-per-crowdsec-10s", "0.001990 p99-per-kong-5s", "2.366 probe-p50-ms",
			"1.176 probes/op", "0.3314 raw-watch-p50-ms", "3.526 raw-watch-p99-ms", "7.722 x-raw-watch", "9228 allocs/op"}},
		// GOMAXPROCS=1: no suffix to drop, and the dash is the name's.
		{pkg: "cmd/noname-prevention", name: "Driver/ip-only/conc1", metrics: []string{"250683 ns/op", "1.000 calls/op", "3989 req/s", "0.9929 x-ref"}},
		{pkg: "webhook load", name: "webhook", metrics: []string{"16029.5 accepted/s", "3.47ms p50", "11.87ms p99", "0 errors"}},
		{pkg: "webhook load", name: "reference", metrics: []string{"14069.9 accepted/s", "4.17ms p50", "11.58ms p99", "0 errors"}},
		{pkg: "webhook load", name: "webhook/reference", metrics: []string{"1.14 ratio"}},
	}
	checkRows(t, rows, want)
}

// With load errors, blockwire-load's errors column has spaces in it: the row is kept whole.
func TestParseWebhookErrors(t *testing.T) {
	in := `median of 3 run(s) per target (each metric separately):
     target  accepted/s     p50      p99                          errors
    webhook     15012.3  3.61ms  12.40ms  12 (0.06%: 503×10 transport×2)
  reference     14069.9  4.17ms  11.58ms                               0
ratio webhook/reference = 1.07 (accepted/s)
`
	rows := parse(strings.NewReader(in))
	want := []row{
		{pkg: "webhook load", name: "webhook", metrics: []string{"15012.3 accepted/s", "3.61ms p50", "12.40ms p99", "12 (0.06%: 503×10 transport×2) errors"}},
		{pkg: "webhook load", name: "reference", metrics: []string{"14069.9 accepted/s", "4.17ms p50", "11.58ms p99", "0 errors"}},
		{pkg: "webhook load", name: "webhook/reference", metrics: []string{"1.07 ratio"}},
	}
	checkRows(t, rows, want)
}

func checkRows(t *testing.T, rows, want []row) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i := range want {
		if rows[i].pkg != want[i].pkg || rows[i].name != want[i].name || strings.Join(rows[i].metrics, "|") != strings.Join(want[i].metrics, "|") {
			t.Errorf("row %d: %+v, want %+v", i, rows[i], want[i])
		}
	}
}
