// Package webhook is blockwire's HTTP API: the Noname webhook target
// POST /v1/incidents, health and readiness probes, and Prometheus metrics.
package webhook

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// readiness reports whether incidents can be stored right now.
type readiness interface {
	Ready(ctx context.Context) error
}

// Config configures the API. Publisher, Ready and Registry are required.
type Config struct {
	// Publisher stores incidents in JetStream.
	Publisher publisher
	// Ready backs GET /readyz: NATS connected and the incident stream present.
	Ready readiness
	// Connected, when set, lets a request fail fast with 503 while NATS is
	// disconnected instead of waiting out PublishTimeout.
	Connected func() bool
	// Subject incidents are published to. Default "noname.incidents.webhook".
	Subject string
	// Auth configures authentication of every /v1 route.
	Auth AuthConfig
	// PublishTimeout bounds the wait for JetStream's acknowledgement. Default 5s.
	PublishTimeout time.Duration
	// RetryAfter is the delay suggested to senders on 503. Default 5s.
	RetryAfter time.Duration
	// Registry receives the API's metrics and is served on /metrics.
	Registry *prometheus.Registry
	// Blocks, when set, enables the manual blocking API under the same
	// authentication.
	Blocks *BlocksConfig
	// Audit, when set, serves GET /v1/audit (JSON lines for a SIEM) under
	// the same authentication.
	Audit auditReader
	// Logger is injected; zero value logs nothing.
	Logger zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// New validates cfg and returns the API's handler.
func New(cfg Config) (http.Handler, error) {
	if cfg.Publisher == nil || cfg.Ready == nil || cfg.Registry == nil {
		return nil, errors.New("configure webhook: Publisher, Ready and Registry are required")
	}
	if cfg.Subject == "" {
		cfg.Subject = "noname.incidents.webhook"
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Auth.Now == nil {
		cfg.Auth.Now = cfg.Now
	}
	if cfg.PublishTimeout < 0 || cfg.RetryAfter < 0 {
		return nil, errors.New("configure webhook: timeouts must not be negative")
	}
	auth, err := NewAuthenticator(cfg.Auth, cfg.Logger)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	inc := &incidents{
		pub: cfg.Publisher, connected: cfg.Connected, subject: cfg.Subject,
		publishTimeout: cfg.PublishTimeout, retryAfter: retryAfterSeconds(cfg.RetryAfter),
		log: cfg.Logger, m: m, now: cfg.Now,
	}
	failed := func(_ *http.Request, outcome string, _ error) { m.requests.WithLabelValues(outcome).Inc() }
	// Refusals on the manual API and the audit trail are counted by route
	// and logged: who knocked, where, and why (never the credentials).
	apiFailed := func(route string) func(*http.Request, string, error) {
		for _, o := range refusedOutcomes {
			m.refused.WithLabelValues(route, o)
		}
		return func(r *http.Request, outcome string, reason error) {
			m.refused.WithLabelValues(route, outcome).Inc()
			cfg.Logger.Warn().Err(reason).Str("route", route).Str("method", r.Method).
				Str("remote", r.RemoteAddr).Str("outcome", outcome).Msg("api request refused")
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/incidents", byMethod(map[string]http.Handler{http.MethodPost: auth.Wrap(inc, BodySignature, failed)}, func() {
		m.requests.WithLabelValues("method_not_allowed").Inc()
	}))
	if bc := cfg.Blocks; bc != nil {
		if bc.Lister == nil || bc.Preflight == nil {
			return nil, errors.New("configure webhook: the blocks API needs a Lister and a Preflight")
		}
		if bc.Subject == "" {
			bc.Subject = "noname.incidents.manual"
		}
		b := &blocks{inc: inc, cfg: *bc}
		list, key := apiFailed("/v1/blocks"), apiFailed("/v1/blocks/{key}")
		mux.Handle("/v1/blocks", byMethod(map[string]http.Handler{
			http.MethodGet:  auth.Wrap(http.HandlerFunc(b.list), RequestSignature, list),
			http.MethodPost: auth.Wrap(http.HandlerFunc(b.create), RequestSignature, list),
		}, func() {}))
		mux.Handle("/v1/blocks/{key}", byMethod(map[string]http.Handler{
			http.MethodDelete: auth.Wrap(http.HandlerFunc(b.remove), RequestSignature, key),
		}, func() {}))
	}
	if cfg.Audit != nil {
		logErr := func(err error) { cfg.Logger.Warn().Err(err).Msg("read audit trail") }
		mux.Handle("/v1/audit", byMethod(map[string]http.Handler{
			http.MethodGet: auth.Wrap(auditStream(cfg.Audit, logErr), RequestSignature, apiFailed("/v1/audit")),
		}, func() {}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := cfg.Ready.Ready(ctx); err != nil {
			writeProblem(w, http.StatusServiceUnavailable, "not-ready", "Not ready", err.Error(), nil)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "no route "+r.URL.Path, nil)
	})
	return mux, nil
}

// byMethod dispatches on the method and answers 405 with a problem document
// for any other, before authentication, so a probe with the wrong method
// learns nothing else.
func byMethod(handlers map[string]http.Handler, refused func()) http.Handler {
	allowed := make([]string, 0, len(handlers))
	for m := range handlers {
		allowed = append(allowed, m)
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := handlers[r.Method]
		if !ok {
			refused()
			w.Header().Set("Allow", allow)
			writeProblem(w, http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed", "use "+allow, nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}
