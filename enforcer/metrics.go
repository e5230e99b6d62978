package enforcer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockwire/blockwire/schemas"
)

// metrics are the process's counters. Every counter is resolved once here, so counting a
// request is one atomic add.
type metrics struct {
	allowed, failOpen, failClosed, refused, panics, pdkErrors prometheus.Counter
	blocked                                                   [nKinds]prometheus.Counter
	tooManyHeaders                                            prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blockwire_enforcer_requests_total",
		Help: "Requests seen by the access handler, by outcome.",
	}, []string{"outcome"})
	blocked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blockwire_enforcer_blocked_total",
		Help: "Requests refused by a block, by the kind that matched and the reason.",
	}, []string{"kind", "reason"})
	for _, c := range []prometheus.Collector{requests, blocked} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m := &metrics{
		allowed:        requests.WithLabelValues("allowed"),
		failOpen:       requests.WithLabelValues("fail_open"),
		failClosed:     requests.WithLabelValues("fail_closed"),
		refused:        requests.WithLabelValues("refused_instance"),
		panics:         requests.WithLabelValues("panic"),
		pdkErrors:      requests.WithLabelValues("pdk_error"),
		tooManyHeaders: blocked.WithLabelValues(string(schemas.EntityHeader), reasonTooManyHeaders),
	}
	for _, k := range schemas.EntityTypes() {
		m.blocked[kindIndex(k)] = blocked.WithLabelValues(string(k), reasonBlocked)
	}
	// "blocked" outcomes are the sum of blockwire_enforcer_blocked_total; keeping them in one
	// place avoids a second atomic add per blocked request.
	return m, nil
}

func (m *metrics) blockedBy(v verdict) prometheus.Counter {
	if v.reason == reasonTooManyHeaders {
		return m.tooManyHeaders
	}
	return m.blocked[kindIndex(v.kind)]
}

// mirrorCollector exports one mirror's state at scrape time.
type mirrorCollector struct {
	m *Mirror

	synced, entries, staleness, lastUpdate, snapshotAge, resumes *prometheus.Desc
}

func newMirrorCollector(m *Mirror) *mirrorCollector {
	labels := prometheus.Labels{"bucket": m.cfg.loc.bucket, "nats": redactURL(m.cfg.loc.url)}
	d := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("blockwire_enforcer_"+name, help, variable, labels)
	}
	return &mirrorCollector{
		m:           m,
		synced:      d("synced", "1 while the bucket's current state is loaded and NATS is connected."),
		entries:     d("entries", "Blocks held in memory, by kind.", "kind"),
		staleness:   d("staleness_seconds", "How long ago the block list was last known to match the bucket (0 while synced)."),
		lastUpdate:  d("last_update_age_seconds", "Time since the last change was applied to the block list."),
		snapshotAge: d("snapshot_age_seconds", "Time since the local snapshot was last written or loaded (-1: never)."),
		resumes:     d("watch_resumes_total", "Watches resumed after the last applied revision, by reason: reconnect (a short outage) or stall (the watch's consumer stopped delivering).", "reason"),
	}
}

func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.synced, c.entries, c.staleness, c.lastUpdate, c.snapshotAge, c.resumes} {
		ch <- d
	}
}

func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Status(time.Now())
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, b2f(st.Synced))
	for _, k := range schemas.EntityTypes() {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.ByKind[kindIndex(k)]), string(k))
	}
	ch <- prometheus.MustNewConstMetric(c.staleness, prometheus.GaugeValue, st.Staleness.Seconds())
	ch <- prometheus.MustNewConstMetric(c.lastUpdate, prometheus.GaugeValue, st.LastUpdateAge.Seconds())
	snap := -1.0
	if st.SnapshotAge >= 0 {
		snap = st.SnapshotAge.Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.snapshotAge, prometheus.GaugeValue, snap)
	for r := range resumeReason(nResumeReasons) {
		ch <- prometheus.MustNewConstMetric(c.resumes, prometheus.CounterValue, float64(st.Resumes[r]), r.String())
	}
}
