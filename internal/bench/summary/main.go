// Command summary prints one table from the outputs of `make bench`: every
// Go benchmark with its custom metrics (the figures and ratios each
// benchmark reports beside its reference), and the webhook load test's
// medians and ratio.
//
//	go run ./internal/bench/summary bench-results/go.txt bench-results/webhook.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: summary FILE... (go test -bench output, webhook.sh output)")
		os.Exit(2)
	}
	var rows []row
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "summary:", err)
			os.Exit(1)
		}
		rows = append(rows, parse(f)...)
		f.Close()
	}
	print(os.Stdout, rows)
}

// row is one line of the summary.
type row struct {
	pkg, name string
	metrics   []string // "value unit", in the order reported
}

// parse reads `go test -bench` text and blockwire-load's report.
func parse(r io.Reader) []row {
	var rows []row
	pkg := ""
	inMedians := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(strings.TrimPrefix(line, "pkg: "), "github.com/blockwire/blockwire/")
		case strings.HasPrefix(line, "Benchmark") && len(f) >= 4:
			rows = append(rows, benchRow(pkg, f))
		case strings.HasPrefix(line, "median of"):
			inMedians = true
		case inMedians && len(f) >= 5 && (f[0] == "webhook" || f[0] == "reference"):
			// The errors column is "0", or with errors "12 (0.06%: 503×10 transport×2)": spaces.
			rows = append(rows, row{pkg: "webhook load", name: f[0], metrics: []string{f[1] + " accepted/s", f[2] + " p50", f[3] + " p99", strings.Join(f[4:], " ") + " errors"}})
		case strings.HasPrefix(line, "ratio webhook/reference"):
			rows = append(rows, row{pkg: "webhook load", name: "webhook/reference", metrics: []string{strings.Fields(strings.SplitN(line, "=", 2)[1])[0] + " ratio"}})
			inMedians = false
		}
	}
	return rows
}

// benchRow keeps the name (without the GOMAXPROCS suffix) and every metric
// but B/op and MB/s, which the table has no room for (allocs/op stays).
func benchRow(pkg string, f []string) row {
	r := row{pkg: pkg, name: strings.TrimPrefix(benchName(f[0]), "Benchmark")}
	for i := 2; i+1 < len(f); i += 2 {
		if f[i+1] == "B/op" || f[i+1] == "MB/s" {
			continue
		}
		r.metrics = append(r.metrics, f[i]+" "+f[i+1])
	}
	return r
}

// benchName drops the "-N" go test appends to a benchmark's name when
// GOMAXPROCS is N > 1: digits after a dash in the last element. At GOMAXPROCS=1
// there is none, and a name such as Driver/ip-only/conc1 stays whole.
func benchName(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 || i < strings.LastIndexByte(name, '/') || i == len(name)-1 {
		return name
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return name
		}
	}
	return name[:i]
}

func print(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PACKAGE\tBENCHMARK\tFIGURES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.pkg, r.name, strings.Join(r.metrics, "   "))
	}
	_ = tw.Flush()
}
