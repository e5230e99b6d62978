package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a request to /v1/incidents, the label of requests_total.
var outcomes = []string{
	"accepted", "duplicate", "unauthorized", "too_large", "bad_body", "unsupported_media_type",
	"invalid", "method_not_allowed", "unavailable", "internal",
}

// Outcomes of a manual action (POST /v1/blocks, DELETE /v1/blocks/{key}).
var manualOutcomes = []string{"accepted", "invalid", "refused", "unavailable"}

// Outcomes of a request to the manual API or the audit trail refused before
// its handler, the outcome label of api_refused_total.
var refusedOutcomes = []string{"unauthorized", "too_large", "bad_body"}

type metrics struct {
	requests *prometheus.CounterVec
	manual   *prometheus.CounterVec
	refused  *prometheus.CounterVec
	publish  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "webhook", Name: "requests_total",
			Help: "Requests to POST /v1/incidents by outcome.",
		}, []string{"outcome"}),
		manual: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "api", Name: "manual_actions_total",
			Help: "Manual blocks and unblocks (POST /v1/blocks, DELETE /v1/blocks/{key}) by outcome.",
		}, []string{"outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "api", Name: "refused_total",
			Help: "Requests to the manual API and the audit trail refused before their handler (authentication, body), by route and outcome.",
		}, []string{"route", "outcome"}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "blockwire", Subsystem: "webhook", Name: "publish_seconds",
			Help:    "Time from publishing an incident (webhook or manual) to JetStream's acknowledgement.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.manual, m.refused, m.publish} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	// Pre-create every outcome so dashboards see zeros, not gaps.
	for _, o := range outcomes {
		m.requests.WithLabelValues(o)
	}
	for _, o := range manualOutcomes {
		m.manual.WithLabelValues(o)
	}
	return m, nil
}
