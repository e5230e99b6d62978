// Package consumer is the pipeline from incident to block: it reads the
// incident stream with a durable pull consumer, translates each entity into
// a canonical block, applies the guardrails, writes the KV bucket, records
// every action in the audit stream and dead-letters what can never succeed.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/blockwire/blockwire/broker"
)

// Config configures the consumer. JS, Conn and Registry are required.
type Config struct {
	// JS is the JetStream context; Conn the connection under it (for advisories).
	JS   jetstream.JetStream
	Conn *nats.Conn
	// Names of the stream, bucket and subjects; zero fields take broker's defaults.
	Names broker.Names
	// Durable is the consumer's name, shared by every serve replica. Default "blockwire".
	Durable string
	// Workers is how many incidents one process applies at once. Default 16.
	Workers int
	// Parallel is how many entities of one incident are applied at once. Default 8.
	Parallel int
	// MaxDeliver is how often an incident is tried before it is dead-lettered. Default 10.
	MaxDeliver int
	// AckWait is how long a delivery may take before JetStream redelivers it
	// (after a crash, how late an incident in hand is applied). Default 10s.
	AckWait time.Duration
	// OpTimeout bounds each round trip to NATS. Default 5s, at most AckWait/2.
	OpTimeout time.Duration
	// MarkerTTL is how long the marker of an unblock stays in the bucket (so
	// watchers that reconnect still see it). Default broker.BlockMarkerTTL.
	MarkerTTL time.Duration
	// Guardrails refuse what must not be blocked.
	Guardrails Guardrails
	// Actor names this process in audit records. Default "blockwire@<hostname>".
	Actor string
	// Registry receives the consumer's metrics.
	Registry prometheus.Registerer
	// Logger is injected.
	Logger zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Consumer applies incidents to the blocks bucket.
type Consumer struct {
	cfg   Config
	names broker.Names
	store *store
	audit *auditor
	m     *metrics
	log   zerolog.Logger
}

// New validates cfg and returns a Consumer; Run starts it.
func New(ctx context.Context, cfg Config) (*Consumer, error) {
	if cfg.JS == nil || cfg.Conn == nil || cfg.Registry == nil {
		return nil, errors.New("configure consumer: JS, Conn and Registry are required")
	}
	if cfg.Durable == "" {
		cfg.Durable = "blockwire"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = 8
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 10
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = min(5*time.Second, cfg.AckWait/2)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MarkerTTL == 0 {
		cfg.MarkerTTL = broker.BlockMarkerTTL
	}
	if cfg.Actor == "" {
		host, _ := os.Hostname()
		cfg.Actor = "blockwire@" + host
	}
	if cfg.OpTimeout <= 0 || cfg.OpTimeout >= cfg.AckWait {
		return nil, fmt.Errorf("configure consumer: op timeout %s must be positive and shorter than ack wait %s", cfg.OpTimeout, cfg.AckWait)
	}
	if cfg.Workers < 1 || cfg.Parallel < 1 || cfg.MaxDeliver < 2 || cfg.AckWait < time.Second || cfg.MarkerTTL < time.Second {
		return nil, fmt.Errorf("configure consumer: workers %d and parallel %d must be positive, max deliver %d at least 2, ack wait %s and marker TTL %s at least 1s",
			cfg.Workers, cfg.Parallel, cfg.MaxDeliver, cfg.AckWait, cfg.MarkerTTL)
	}
	if err := cfg.Guardrails.defaults(); err != nil {
		return nil, err
	}
	names := cfg.Names.WithDefaults()
	kv, err := cfg.JS.KeyValue(ctx, names.BlocksBucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", names.BlocksBucket, err)
	}
	stream, err := cfg.JS.Stream(ctx, broker.KVStream(names.BlocksBucket))
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", names.BlocksBucket, err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Consumer{
		cfg:   cfg,
		names: names,
		store: &store{
			kv: kv, pub: cfg.JS, last: stream, putPrefix: broker.KVPrefix(names.BlocksBucket),
			markerTTL: cfg.MarkerTTL, now: cfg.Now, opTimeout: cfg.OpTimeout,
			ceiling: &ceiling{
				max: cfg.Guardrails.MaxActiveBlocks, status: kv, now: cfg.Now, opTimeout: cfg.OpTimeout,
				every: time.Second, liveEvery: 10 * time.Second,
				live: func(ctx context.Context) (int, error) { return countLive(ctx, cfg.JS, names.BlocksBucket) },
			},
		},
		audit: &auditor{pub: cfg.JS, subject: names.AuditSubject, actor: cfg.Actor, now: cfg.Now},
		m:     m,
		log:   cfg.Logger,
	}, nil
}

// Run consumes until ctx is cancelled; messages in hand are finished (or
// left for redelivery) before it returns. Cancellation returns nil.
func (c *Consumer) Run(ctx context.Context) error {
	// Retried: replicas starting together, or a cluster electing a leader,
	// leave a create unanswered for a moment.
	var cons jetstream.Consumer
	err := broker.Retry(ctx, 10, 5*time.Second, func(ctx context.Context) error {
		var err error
		cons, err = c.cfg.JS.CreateOrUpdateConsumer(ctx, c.names.IncidentStream, jetstream.ConsumerConfig{
			Durable:       c.cfg.Durable,
			Description:   "blockwire: incidents to blocks",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.cfg.AckWait,
			MaxDeliver:    c.cfg.MaxDeliver,
			MaxAckPending: max(1000, 4*c.cfg.Workers),
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", c.cfg.Durable, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	msgs := make(chan jetstream.Msg)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-gctx.Done(): // not acked: redelivered to another replica or after restart
		}
	}, jetstream.PullMaxMessages(2*c.cfg.Workers),
		// Short pulls: a pull lost to a leader change or a racing create is
		// replaced in seconds, not after two missed 15 s heartbeats.
		jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn().Err(err).Msg("consume incidents")
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.names.IncidentStream, err)
	}
	for range c.cfg.Workers {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case m := <-msgs:
					c.handle(gctx, m)
				}
			}
		})
	}
	g.Go(func() error { return c.watchMaxDeliveries(gctx) })
	g.Go(func() error { return c.watchExpiries(gctx) })
	g.Go(func() error { return c.sample(gctx, cons) })
	c.log.Info().Str("durable", c.cfg.Durable).Int("workers", c.cfg.Workers).Msg("consumer started")
	<-gctx.Done()
	cc.Stop()
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// handle applies one delivery and settles it: ack when applied, terminate
// after dead-lettering what can never succeed, otherwise NAK with a delay
// that grows with each delivery.
func (c *Consumer) handle(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		c.log.Error().Err(err).Msg("read message metadata")
		_ = m.Term()
		return
	}
	// Finish an incident in hand even while shutting down, within AckWait.
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AckWait)
	defer cancel()
	err = c.process(work, m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
	var poison *poisonError
	switch {
	case err == nil:
		c.m.applyLatency.Observe(c.cfg.Now().Sub(meta.Timestamp).Seconds())
		c.m.incidents.WithLabelValues("applied").Inc()
		if err := m.Ack(); err != nil {
			c.log.Warn().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("ack incident")
		}
	case errors.As(err, &poison):
		if err := c.deadLetter(work, poison.reason, poison.detail, meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data()); err != nil {
			c.log.Warn().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("dead-letter incident")
			_ = m.NakWithDelay(backoff(meta.NumDelivered))
			return
		}
		c.m.incidents.WithLabelValues("dead_letter").Inc()
		_ = m.Term()
	default:
		c.m.incidents.WithLabelValues("retry").Inc()
		c.log.Warn().Err(err).Uint64("seq", meta.Sequence.Stream).Uint64("delivery", meta.NumDelivered).Msg("incident not applied, will retry")
		_ = m.NakWithDelay(backoff(meta.NumDelivered))
	}
}

// backoff grows 1s, 2s, 4s … up to a minute with each delivery.
func backoff(delivered uint64) time.Duration {
	if delivered > 7 {
		return time.Minute
	}
	return min(time.Minute, time.Second<<max(delivered, 1)>>1)
}

// poisonError marks a message that can never be applied.
type poisonError struct{ reason, detail string }

func (e *poisonError) Error() string { return e.reason + ": " + e.detail }
