// Package kongsync projects the blocks bucket onto Kong through its Admin API (go-kong), so that
// what Kong enforces natively — address and range deny lists (ip-restriction) and blocked
// consumers (request-termination) — is enforced by Kong itself, even on nodes without the
// noname-prevention plugin. The bucket stays the truth; Kong is a projection the sync keeps
// correct: on start, on bucket changes coalesced within a window, and every period to repair
// drift. It only ever touches plugins tagged managed-by-blockwire, writes them under
// deterministic ids (idempotent PUTs), and one writer at a time holds a lease in a NATS KV
// bucket. See docs/KONG-SYNC.md.
package kongsync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/kong/go-kong/kong"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/wait"
)

// Defaults of Config.
const (
	DefaultWindow         = 250 * time.Millisecond
	DefaultPeriod         = time.Minute
	DefaultLeaseBucket    = "blockwire_leases"
	DefaultLeaseTTL       = 15 * time.Second
	DefaultMessage        = "Forbidden"
	DefaultFailureBackoff = time.Minute
	DefaultAuthRetry      = time.Minute
	DefaultDBLessRecheck  = 10 * time.Minute

	// MinLeaseTTL is the shortest lease: the server's TTL resolution is 1s and renewals come
	// every third of the TTL.
	MinLeaseTTL = 3 * time.Second
)

// Config is everything a Syncer needs.
type Config struct {
	// Kong is the Admin API client, from NewKongClient. Required.
	Kong *kong.Client
	// KongURL is the Admin API URL, shown in logs and the status with credentials removed.
	KongURL string
	// JS is JetStream on the NATS holding the blocks bucket and the audit stream. Required.
	JS jetstream.JetStream
	// Names are the blocks bucket and audit subject; zero fields take broker's defaults.
	Names broker.Names
	// Window coalesces bucket changes: a reconcile starts this long after the first change it
	// covers, so a burst of thousands of blocks is a handful of writes. Default 250ms.
	Window time.Duration
	// Period is the interval of full reconciles that repair drift and refresh names. Default 60s.
	Period time.Duration
	// LeaseBucket is the KV bucket of the one-writer lease (and the status), created when
	// missing. Default "blockwire_leases".
	LeaseBucket string
	// LeaseKey names the lease; syncers sharing a key take turns. Default "kongsync", or
	// "kongsync-<workspace>" for a workspace.
	LeaseKey string
	// LeaseTTL is how long a dead holder keeps the lease; it is renewed every third of it.
	// Default 15s; at least 3s.
	LeaseTTL time.Duration
	// Holder names this process in the lease. Default "<hostname>:<pid>:<random>".
	Holder string
	// Message is the message of Kong's 403 answers. Default "Forbidden".
	Message string
	// Retry is how one Admin API call is retried (5xx, 429, timeouts). Zero fields take defaults.
	Retry RetryPolicy
	// FailureBackoff caps the wait before a failed reconcile is tried again; the wait doubles
	// from one second. Default 60s.
	FailureBackoff time.Duration
	// AuthRetry is the wait after Kong refused the credentials (401/403). Default 60s.
	AuthRetry time.Duration
	// DBLessRecheck is how often a sync standing down before a DB-less Kong looks again. Default 10m.
	DBLessRecheck time.Duration
	// Actor is the audit records' actor. Default "kongsync".
	Actor string
	// Registry receives the metrics. Default: a private registry.
	Registry prometheus.Registerer
	// Logger is injected; the zero value logs nothing.
	Logger zerolog.Logger
	// Now is the clock deciding expiry. Default time.Now.
	Now func() time.Time
}

var keyRe = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// CheckTimings validates a coalescing window, a reconcile period and a lease TTL as New
// takes them (zero = the default), so a command line can refuse them before connecting.
func CheckTimings(window, period, leaseTTL time.Duration) error {
	c := Config{Window: window, Period: period, LeaseTTL: leaseTTL}
	c.timingDefaults()
	return errors.Join(c.timingErrors()...)
}

func (c *Config) timingDefaults() {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
}

func (c *Config) timingErrors() []error {
	var errs []error
	if c.Window < 0 || c.Period <= 0 || c.Period < c.Window {
		errs = append(errs, fmt.Errorf("window %s and period %s: want 0 <= window <= period", c.Window, c.Period))
	}
	if c.LeaseTTL < MinLeaseTTL {
		errs = append(errs, fmt.Errorf("lease ttl %s: at least %s", c.LeaseTTL, MinLeaseTTL))
	}
	return errs
}

func (c *Config) defaults() {
	c.timingDefaults()
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.LeaseKey == "" && c.Kong != nil {
		c.LeaseKey = defaultLeaseKey(c.Kong.Workspace())
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s:%d:%08x", host, os.Getpid(), rand.Uint32())
	}
	if c.Message == "" {
		c.Message = DefaultMessage
	}
	c.Retry.defaults()
	if c.FailureBackoff == 0 {
		c.FailureBackoff = DefaultFailureBackoff
	}
	if c.AuthRetry == 0 {
		c.AuthRetry = DefaultAuthRetry
	}
	if c.DBLessRecheck == 0 {
		c.DBLessRecheck = DefaultDBLessRecheck
	}
	if c.Actor == "" {
		c.Actor = "kongsync"
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Names = c.Names.WithDefaults()
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Kong == nil {
		bad("kong client: required")
	}
	if c.JS == nil {
		bad("jetstream: required")
	}
	if err := c.Names.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.timingErrors()...)
	if !keyRe.MatchString(c.LeaseBucket) || len(c.LeaseBucket) > 64 {
		bad("lease bucket %q: use letters, digits, '-' and '_'", c.LeaseBucket)
	}
	if !keyRe.MatchString(c.LeaseKey) {
		bad("lease key %q: use letters, digits and -/_=.", c.LeaseKey)
	}
	if c.Retry.Attempts < 1 || c.Retry.Base <= 0 || c.Retry.Max < c.Retry.Base {
		bad("retry policy %+v: want attempts >= 1 and 0 < base <= max", c.Retry)
	}
	if len(errs) > 0 {
		return fmt.Errorf("configure kong sync: %w", errors.Join(errs...))
	}
	return nil
}

// defaultLeaseKey is "kongsync", per workspace when one is set.
func defaultLeaseKey(workspace string) string {
	if workspace == "" {
		return "kongsync"
	}
	if keyRe.MatchString(workspace) {
		return "kongsync-" + workspace
	}
	return fmt.Sprintf("kongsync-%x", workspace)
}

func statusKey(leaseKey string) string { return leaseKey + ".status" }

// Syncer keeps Kong's managed plugins equal to the blocks bucket.
type Syncer struct {
	cfg   Config
	log   zerolog.Logger
	api   *admin
	m     *metrics
	audit *auditor

	mu       sync.Mutex
	statusKV jetstream.KeyValue // the lease bucket, once opened
	seq      uint64             // reconciles run, for audit message ids
}

// New validates cfg and builds a Syncer; Run starts it.
func New(cfg Config) (*Syncer, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("component", "kongsync").Logger()
	s := &Syncer{
		cfg: cfg, log: log, m: m,
		api: &admin{
			plugins: cfg.Kong.Plugins, info: cfg.Kong, requests: cfg.Kong, retry: cfg.Retry, m: m, log: log,
		},
		audit: &auditor{pub: cfg.JS, subject: cfg.Names.AuditSubject, actor: cfg.Actor, now: cfg.Now},
	}
	return s, nil
}

// Holder is this process's name in the lease.
func (s *Syncer) Holder() string { return s.cfg.Holder }

// Run syncs until ctx ends: it campaigns for the lease and, while holding it, watches the bucket
// and reconciles. Kong or NATS trouble is logged, measured and retried, never returned: the rest
// of serve keeps working. It returns nil once ctx is done.
func (s *Syncer) Run(ctx context.Context) error {
	s.log.Info().Str("kong", RedactURL(s.cfg.KongURL)).Str("holder", s.cfg.Holder).
		Dur("window", s.cfg.Window).Dur("period", s.cfg.Period).Msg("kong sync starting")
	var kv jetstream.KeyValue
	for attempt := 1; kv == nil; attempt++ {
		var err error
		if kv, err = ensureLeaseBucket(ctx, s.cfg.JS, s.cfg.LeaseBucket, s.cfg.Names.Replicas); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn().Err(err).Msg("open kong sync lease bucket, retrying")
			if wait.Sleep(ctx, s.cfg.Retry.backoff(min(attempt, 6))) != nil {
				return nil
			}
		}
	}
	l := s.newLease(kv)
	l.run(ctx, func(lctx context.Context) error { return s.lead(lctx, l) })
	return nil
}

// newLease makes the lease on kv, which also holds the sync's status.
func (s *Syncer) newLease(kv jetstream.KeyValue) *lease {
	s.mu.Lock()
	s.statusKV = kv
	s.mu.Unlock()
	return &lease{
		kv: kv, pub: s.cfg.JS, subject: broker.KVPrefix(s.cfg.LeaseBucket) + s.cfg.LeaseKey, key: s.cfg.LeaseKey,
		holder: s.cfg.Holder, ttl: s.cfg.LeaseTTL, log: s.log, now: s.cfg.Now,
	}
}

// Once reads the bucket and Kong and reconciles once. With dryRun it only computes the plan:
// nothing is written and no lease is taken. Otherwise it takes the lease for the run (failing
// with ErrLeaseHeld when a running serve holds it), and refuses a DB-less Kong with ErrDBLess.
func (s *Syncer) Once(ctx context.Context, dryRun bool) (*Plan, error) {
	state := newBlockState()
	if err := s.loadBlocks(ctx, state); err != nil {
		return nil, err
	}
	ss := newSession(s.api)
	if dryRun {
		return s.plan(ctx, ss, state)
	}
	kv, err := ensureLeaseBucket(ctx, s.cfg.JS, s.cfg.LeaseBucket, s.cfg.Names.Replicas)
	if err != nil {
		return nil, err
	}
	l := s.newLease(kv)
	ok, err := l.tryAcquire(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		holder, _ := l.currentHolder(ctx)
		return nil, fmt.Errorf("%w (%s); it is syncing already", ErrLeaseHeld, holder)
	}
	var plan *Plan
	err = l.hold(ctx, func(lctx context.Context) error {
		db, err := s.api.database(lctx)
		if err != nil {
			return err
		}
		if db == "off" {
			return fmt.Errorf("%w: Kong refuses Admin API writes there; the noname-prevention plugin is the enforcement path", ErrDBLess)
		}
		plan, err = s.reconcile(lctx, ss, state, l.valid)
		return err
	})
	if err == nil && plan == nil {
		err = errLeaseLost // renewals failed for a whole TTL while the run went on
	}
	return plan, err
}
