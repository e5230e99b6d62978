// Package app wires blockwire's parts into the serve daemon. It is the one
// place that knows every part; main only parses flags and calls Serve.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/webhook"
)

// Config is everything serve needs.
type Config struct {
	// Broker locates NATS: embedded (no URL) or external.
	Broker broker.Config
	// HTTPAddr is the API's listen address. Default "127.0.0.1:8080".
	HTTPAddr string
	// Auth is the API's authentication.
	Auth webhook.AuthConfig
	// Guardrails refuse what must never be blocked.
	Guardrails consumer.Guardrails
	// Workers is how many incidents this process applies at once. Default 16.
	Workers int
	// AckWait is how long an incident may take to apply before it is
	// redelivered; also how late an incident in hand is applied after a
	// crash. Default 10s.
	AckWait time.Duration
	// IngestOnly runs the API without the consumer, for replicas that only
	// receive incidents while others apply them (and for measuring ingest).
	IngestOnly bool
	// PublishTimeout bounds the wait for JetStream's ack of an incident. Default 5s.
	PublishTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown: in-flight requests, then
	// the NATS drain. Default 15s.
	ShutdownTimeout time.Duration
	// KongSync projects the blocks onto Kong's Admin API when its URL is set.
	KongSync KongSync
	// Logger is injected.
	Logger zerolog.Logger
}

func (c *Config) defaults() {
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	c.Broker.Logger = c.Logger
	// A signed timestamp is accepted for 2×MaxSkew: the authenticator refuses a skew the incident
	// stream's duplicate window cannot cover, which is what stops a signed request replayed.
	if c.Auth.DuplicateWindow == 0 {
		c.Auth.DuplicateWindow = c.Broker.Names.WithDefaults().DuplicateWindow
	}
}

// Check validates cfg without starting anything (serve --check-config).
func Check(cfg Config) error {
	cfg.defaults()
	if err := cfg.Broker.Validate(); err != nil {
		return err
	}
	if err := cfg.Guardrails.Validate(); err != nil {
		return err
	}
	if err := cfg.KongSync.Check(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		return fmt.Errorf("check http address %q: %w", cfg.HTTPAddr, err)
	}
	if cfg.Auth.AllowUnauthenticated && !loopback(cfg.HTTPAddr) {
		return fmt.Errorf("check authentication: --insecure-demo only listens on loopback, not %q", cfg.HTTPAddr)
	}
	_, err := webhook.NewAuthenticator(cfg.Auth, zerolog.Nop())
	return err
}

// Serve runs blockwire until ctx is cancelled, then shuts down cleanly: stop
// accepting, finish in-flight requests, drain NATS. A cancelled ctx is a
// clean shutdown and returns nil.
func Serve(ctx context.Context, cfg Config) error {
	cfg.defaults()
	if err := Check(cfg); err != nil {
		return err
	}
	log := cfg.Logger

	b, err := broker.Open(ctx, cfg.Broker)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := b.Close(closeCtx); err != nil {
			log.Error().Err(err).Msg("close nats")
		}
	}()
	if err := b.Provision(ctx); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lister, err := consumer.NewLister(b.JetStream(), b.Names().BlocksBucket, nil)
	if err != nil {
		return err
	}
	history, err := replay.NewReader(b.JetStream(), b.Names())
	if err != nil {
		return err
	}
	api, err := webhook.New(webhook.Config{
		Audit:          history,
		Publisher:      b.JetStream(),
		Ready:          b,
		Connected:      b.Conn().IsConnected,
		Subject:        b.Names().IncidentSubject + ".webhook",
		Auth:           cfg.Auth,
		PublishTimeout: cfg.PublishTimeout,
		Registry:       reg,
		Logger:         log,
		Blocks: &webhook.BlocksConfig{
			Lister: lister, Preflight: cfg.Guardrails.Preflight, Subject: b.Names().IncidentSubject + ".manual",
		},
	})
	if err != nil {
		return err
	}

	cons, err := consumer.New(ctx, consumer.Config{
		JS: b.JetStream(), Conn: b.Conn(), Names: b.Names(), Workers: cfg.Workers, AckWait: cfg.AckWait,
		Guardrails: cfg.Guardrails, Registry: reg, Logger: log,
	})
	if err != nil {
		return err
	}

	syncer, err := cfg.KongSync.Syncer(b, reg, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ev := log.Info().Str("http", ln.Addr().String()).Bool("embedded_nats", b.Embedded())
	if b.Embedded() { // an external URL may carry credentials: never log it
		ev = ev.Str("nats", b.ClientURL())
	}
	ev.Msg("blockwire serving")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	if !cfg.IngestOnly {
		g.Go(func() error { return cons.Run(gctx) })
	}
	if syncer != nil {
		g.Go(func() error { return syncer.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info().Msg("shutting down")
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			return fmt.Errorf("shut down http: %w", err)
		}
		return nil
	})
	return g.Wait()
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
