package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// result is what one timed run produced, request by request: status[i] is the
// HTTP status of request i (0 when the request failed before any answer) and
// latency[i] its duration, from just before sending to after the answer's body
// was read.
type result struct {
	target     string
	run        int
	status     []int
	latency    []time.Duration
	duplicates int           // 202 answers that said "duplicate":true
	elapsed    time.Duration // wall time from the first request sent to the last answer read
	firstError string        // the first transport error, for diagnosis
}

// summary is the digest of one run, or the median of several.
type summary struct {
	Target         string         `json:"target"`
	Run            int            `json:"run"` // 1-based; 0 for a median
	Requests       int            `json:"requests"`
	Accepted       int            `json:"accepted"`
	Duplicates     int            `json:"duplicates"`
	Errors         int            `json:"errors"`
	ErrorsByStatus map[string]int `json:"errorsByStatus,omitempty"`
	ErrorRate      float64        `json:"errorRate"`
	Seconds        float64        `json:"seconds"`
	AcceptedPerSec float64        `json:"acceptedPerSec"`
	P50            time.Duration  `json:"-"` // reported in milliseconds by jsonSummary
	P90            time.Duration  `json:"-"`
	P99            time.Duration  `json:"-"`
	Max            time.Duration  `json:"-"`
	FirstError     string         `json:"firstError,omitempty"`
}

// statusKey names an error bucket: the HTTP status, or "transport" when no
// answer came back at all.
func statusKey(status int) string {
	if status == 0 {
		return "transport"
	}
	return strconv.Itoa(status)
}

// summarize digests a run. Only 202 counts as accepted; every other answer,
// and every request without an answer, is an error. Latency percentiles are
// over accepted requests only, so fast refusals (401, 400) cannot flatter
// them; errors are reported beside them.
func summarize(r result) summary {
	s := summary{Target: r.target, Run: r.run, Requests: len(r.status), Duplicates: r.duplicates,
		Seconds: r.elapsed.Seconds(), FirstError: r.firstError}
	ok := make([]time.Duration, 0, len(r.status))
	for i, st := range r.status {
		if st == 202 {
			ok = append(ok, r.latency[i])
			continue
		}
		if s.ErrorsByStatus == nil {
			s.ErrorsByStatus = map[string]int{}
		}
		s.ErrorsByStatus[statusKey(st)]++
		s.Errors++
	}
	s.Accepted = len(ok)
	if s.Requests > 0 {
		s.ErrorRate = float64(s.Errors) / float64(s.Requests)
	}
	if r.elapsed > 0 {
		s.AcceptedPerSec = float64(s.Accepted) / r.elapsed.Seconds()
	}
	slices.Sort(ok)
	s.P50 = percentile(ok, 50)
	s.P90 = percentile(ok, 90)
	s.P99 = percentile(ok, 99)
	if len(ok) > 0 {
		s.Max = ok[len(ok)-1]
	}
	return s
}

// percentile is the nearest-rank percentile of an ascending slice: the
// smallest value such that at least p% of the values are <= it. It is always
// one of the observed values; 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps float error from pushing an exact rank up by one
	// (99.9/100*1000 is 999.0000000000001).
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// median of xs (the mean of the two middle values when len is even); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(math.Round(median(xs)))
}

// medianOf combines the runs of one target: each rate and percentile is the
// median of that metric over the runs (taken separately, so the result need
// not be one particular run); counts are totals over the runs.
func medianOf(runs []summary) summary {
	if len(runs) == 0 {
		return summary{}
	}
	m := summary{Target: runs[0].Target}
	var rate, secs []float64
	var p50, p90, p99, mx []time.Duration
	for _, r := range runs {
		m.Requests += r.Requests
		m.Accepted += r.Accepted
		m.Duplicates += r.Duplicates
		m.Errors += r.Errors
		for k, v := range r.ErrorsByStatus {
			if m.ErrorsByStatus == nil {
				m.ErrorsByStatus = map[string]int{}
			}
			m.ErrorsByStatus[k] += v
		}
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		rate = append(rate, r.AcceptedPerSec)
		secs = append(secs, r.Seconds)
		p50 = append(p50, r.P50)
		p90 = append(p90, r.P90)
		p99 = append(p99, r.P99)
		mx = append(mx, r.Max)
	}
	if m.Requests > 0 {
		m.ErrorRate = float64(m.Errors) / float64(m.Requests)
	}
	m.AcceptedPerSec = median(rate)
	m.Seconds = median(secs)
	m.P50, m.P90, m.P99, m.Max = medianDuration(p50), medianDuration(p90), medianDuration(p99), medianDuration(mx)
	return m
}
