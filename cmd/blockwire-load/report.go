package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func msFloat(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// errorText is "0" or "12 (0.06%: 503×10 transport×2)".
func errorText(s summary) string {
	if s.Errors == 0 {
		return "0"
	}
	keys := make([]string, 0, len(s.ErrorsByStatus))
	for k := range s.ErrorsByStatus {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, s.ErrorsByStatus[k])
	}
	return fmt.Sprintf("%d (%.2f%%: %s)", s.Errors, 100*s.ErrorRate, strings.Join(parts, " "))
}

func runLine(s summary, runs int) string {
	line := fmt.Sprintf("run %d/%d %-9s %6d req in %6.2fs  %9.1f accepted/s  p50 %s  p90 %s  p99 %s  max %s  errors %s",
		s.Run, runs, s.Target, s.Requests, s.Seconds, s.AcceptedPerSec, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), errorText(s))
	if s.Duplicates > 0 {
		line += fmt.Sprintf("  DUPLICATES %d (not stored anew: this run is not comparable)", s.Duplicates)
	}
	if s.FirstError != "" {
		line += "\n    first transport error: " + s.FirstError
	}
	return line
}

// printTable prints the medians: target | accepted/s | p50 | p99 | errors.
func printTable(w io.Writer, medians []summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\taccepted/s\tp50\tp99\terrors\t")
	for _, m := range medians {
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t\n", m.Target, m.AcceptedPerSec, ms(m.P50), ms(m.P99), errorText(m))
	}
	tw.Flush()
}

// machine describes where the numbers come from.
type machine struct {
	CPUs          int    `json:"cpus"`
	GOMAXPROCS    int    `json:"gomaxprocs"`
	MemTotalBytes int64  `json:"memTotalBytes"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	GoVersion     string `json:"goVersion"`
	// LoadAvg1 is the 1-minute load average at the start and at the end of
	// the measurement (-1 if unknown): on a shared machine, a load above the
	// core count means the figures include other people's work.
	LoadAvg1Start float64 `json:"loadAvg1Start"`
	LoadAvg1End   float64 `json:"loadAvg1End"`
}

func thisMachine() machine {
	return machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), MemTotalBytes: memTotal("/proc/meminfo"),
		OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(),
		LoadAvg1Start: loadAvg1("/proc/loadavg"), LoadAvg1End: -1}
}

// loadAvg1 reads the 1-minute load average from a /proc/loadavg-style file; -1 if unknown.
func loadAvg1(path string) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return -1
	}
	return v
}

func (m machine) String() string {
	mem := "unknown memory"
	if m.MemTotalBytes > 0 {
		mem = fmt.Sprintf("%.1f GiB memory", float64(m.MemTotalBytes)/(1<<30))
	}
	load := ""
	if m.LoadAvg1Start >= 0 && m.LoadAvg1End >= 0 {
		load = fmt.Sprintf(", load average %.2f at start, %.2f at end", m.LoadAvg1Start, m.LoadAvg1End)
	}
	return fmt.Sprintf("%d cores (GOMAXPROCS %d), %s, %s/%s, %s%s", m.CPUs, m.GOMAXPROCS, mem, m.OS, m.Arch, m.GoVersion, load)
}

// memTotal reads MemTotal from a /proc/meminfo-style file, in bytes; 0 if unknown.
func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	return parseMemTotal(f)
}

func parseMemTotal(r io.Reader) int64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			if len(fields) >= 3 && strings.EqualFold(fields[2], "kB") {
				n *= 1024
			}
			return n
		}
	}
	return 0
}

// commandLine is args as a shell would take them back, with the value of
// -token replaced so the report can be pasted anywhere.
func commandLine(args []string) string {
	out := make([]string, len(args))
	redactNext := false
	for i, a := range args {
		switch {
		case redactNext:
			a, redactNext = "REDACTED", false
		case a == "-token" || a == "--token":
			redactNext = true
		case strings.HasPrefix(a, "-token=") || strings.HasPrefix(a, "--token="):
			a = a[:strings.Index(a, "=")+1] + "REDACTED"
		}
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=./:,@+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// jsonSummary is a summary with its latencies in milliseconds.
type jsonSummary struct {
	summary
	P50Ms float64 `json:"p50Ms"`
	P90Ms float64 `json:"p90Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
}

func toJSON(s summary) jsonSummary {
	return jsonSummary{summary: s, P50Ms: msFloat(s.P50), P90Ms: msFloat(s.P90), P99Ms: msFloat(s.P99), MaxMs: msFloat(s.Max)}
}

type jsonReport struct {
	Command string                 `json:"command"`
	Machine machine                `json:"machine"`
	Config  config                 `json:"config"`
	Runs    []jsonSummary          `json:"runs"`
	Median  map[string]jsonSummary `json:"median"`
	// Ratio is median webhook accepted/s over median reference accepted/s; absent unless both ran.
	Ratio *float64 `json:"ratio,omitempty"`
	// Failed is true when a run had more than 1% errors (the exit status is then 1).
	Failed bool `json:"failed"`
}
