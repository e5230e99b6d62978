package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/wait"
	"github.com/blockwire/blockwire/schemas"
)

type metrics struct {
	incidents    *prometheus.CounterVec
	blocks       *prometheus.CounterVec
	refused      *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	pending      prometheus.Gauge
	active       *prometheus.GaugeVec
	applyLatency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		incidents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "incidents_total",
			Help: "Incident deliveries by outcome: applied, retry, dead_letter.",
		}, []string{"outcome"}),
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "blocks_total",
			Help: "Block actions by action (blocked, extended, unblocked, expired, refused) and kind.",
		}, []string{"action", "kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "refused_total",
			Help: "Entities refused, by guardrail reason.",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "dead_letters_total",
			Help: "Incidents copied to blockwire.dlq, by reason.",
		}, []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "pending",
			Help: "Incidents in the stream not yet delivered to the consumer.",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "blockwire", Name: "blocks_active",
			Help: "Keys in the blocks bucket by kind (sampled; may include markers of recently removed keys).",
		}, []string{"kind"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "blockwire", Subsystem: "consumer", Name: "stored_to_applied_seconds",
			Help:    "Time from JetStream storing an incident to its blocks and audit records being stored.",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120},
		}),
	}
	for _, c := range []prometheus.Collector{m.incidents, m.blocks, m.refused, m.deadLetters, m.pending, m.active, m.applyLatency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register consumer metrics: %w", err)
		}
	}
	return m, nil
}

// sample refreshes the gauges that need a round trip: consumer pending and
// active blocks by kind. Counting per kind uses a short-lived consumer's
// pending count over the last message per key, so it never lists the keys.
func (c *Consumer) sample(ctx context.Context, cons jetstream.Consumer) error {
	const every = 15 * time.Second
	for {
		if info, err := cons.Info(ctx); err == nil {
			c.m.pending.Set(float64(info.NumPending))
		}
		for _, kind := range schemas.EntityTypes() {
			if n, err := c.countKind(ctx, kind); err == nil {
				c.m.active.WithLabelValues(string(kind)).Set(float64(n))
			}
		}
		_ = wait.Sleep(ctx, every)
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *Consumer) countKind(ctx context.Context, kind schemas.EntityType) (uint64, error) {
	stream := broker.KVStream(c.names.BlocksBucket)
	cons, err := c.cfg.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     broker.KVPrefix(c.names.BlocksBucket) + string(kind) + ".>",
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 10 * time.Second,
		HeadersOnly:       true,
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.cfg.JS.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name) }()
	return cons.CachedInfo().NumPending, nil
}
