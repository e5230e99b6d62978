package enforcer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/schemas"
)

// RuntimeConfig configures the process-wide part of the plugin. Every field is optional.
type RuntimeConfig struct {
	// KongPrefix is Kong's prefix directory (go-pdk's -kong-prefix), where the snapshot goes
	// by default; it is writable by Kong since the plugin's socket lives there.
	KongPrefix string
	// Getenv reads the BLOCKWIRE_* settings; default os.Getenv.
	Getenv func(string) string
	// Logger receives the plugin's log; Kong copies the plugin server's stderr to its log.
	Logger zerolog.Logger
	// Priority is the plugin's priority in Kong's order, as given to go-pdk; 0 = unknown.
	// Only used to warn that consumer blocks cannot match before authentication.
	Priority int
	// Registry receives the metrics; default a new registry (with Go and process metrics),
	// served on BLOCKWIRE_ENFORCER_METRICS_ADDR when set.
	Registry *prometheus.Registry
}

// Process-wide settings read from the environment, and their defaults.
const (
	envMetricsAddr      = "BLOCKWIRE_ENFORCER_METRICS_ADDR"
	envSnapshot         = "BLOCKWIRE_ENFORCER_SNAPSHOT"          // a file path, or "off"
	envSnapshotInterval = "BLOCKWIRE_ENFORCER_SNAPSHOT_INTERVAL" // Go duration, default 1m
	envWatchCheck       = "BLOCKWIRE_ENFORCER_WATCH_CHECK"       // Go duration, default 1s (see lagCheck)
	envLogInterval      = "BLOCKWIRE_ENFORCER_LOG_INTERVAL"      // Go duration, default 1m; 0 = off
	snapshotFileName    = "noname-prevention.snapshot"
)

// Runtime is the plugin server's process-wide state: the metrics, and one Mirror per NATS
// location (normally exactly one), shared by every plugin instance. main creates it and
// passes its New to go-pdk's StartServer, so no package-level state is involved.
type Runtime struct {
	log          zerolog.Logger
	env          envDefaults
	m            *metrics
	reg          *prometheus.Registry
	snapshotPath string // for the environment's location; "" = off
	mirrorBase   mirrorConfig
	logEvery     time.Duration
	priority     int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards mirrors: taken when an instance starts, never by requests
	mirrors map[location]*Mirror
	defLoc  location
	srv     *http.Server

	closeOnce sync.Once
}

// NewRuntime reads the environment, starts the mirror of the default location (so the
// snapshot loads and the watch starts before the first request), the metrics endpoint and
// the status log. Problems with process-wide settings are logged and the feature left off:
// the plugin server must start anyway, or Kong has no plugin at all.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt := &Runtime{
		log: cfg.Logger, env: readEnvDefaults(cfg.Getenv), m: m, reg: reg, ctx: ctx, cancel: cancel,
		mirrors: map[location]*Mirror{},
		mirrorBase: mirrorConfig{
			snapshotEvery: envDuration(cfg, envSnapshotInterval, time.Minute),
			rewatchAfter:  5 * time.Minute,
			sweepEvery:    time.Second,
			lagCheckEvery: envDuration(cfg, envWatchCheck, time.Second),
		},
	}
	rt.logEvery = envDuration(cfg, envLogInterval, time.Minute)
	rt.priority = cfg.Priority
	rt.snapshotPath = snapshotPath(cfg)

	if s, err := rt.env.resolve(&Config{}); err != nil {
		rt.log.Error().Err(err).Msg("the BLOCKWIRE_* defaults are invalid: instances without their own config will be refused")
	} else {
		rt.defLoc = s.loc
		rt.mirror(s.loc)
	}
	if addr := cfg.Getenv(envMetricsAddr); addr != "" {
		rt.serveMetrics(addr)
	}
	if rt.logEvery > 0 {
		rt.wg.Add(1)
		go rt.logLoop()
	}
	return rt, nil
}

// envDuration reads a duration setting, logging and defaulting a bad one.
func envDuration(cfg RuntimeConfig, name string, def time.Duration) time.Duration {
	v := cfg.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		cfg.Logger.Error().Str("setting", name).Str("value", v).Msg("not a duration; using the default")
		return def
	}
	return d
}

// snapshotPath is BLOCKWIRE_ENFORCER_SNAPSHOT, or a file in Kong's prefix, or in the temp
// dir when there is no prefix directory.
func snapshotPath(cfg RuntimeConfig) string {
	switch v := cfg.Getenv(envSnapshot); {
	case strings.EqualFold(v, "off"):
		return ""
	case v != "":
		return v
	}
	if fi, err := os.Stat(cfg.KongPrefix); cfg.KongPrefix != "" && err == nil && fi.IsDir() {
		return filepath.Join(cfg.KongPrefix, snapshotFileName)
	}
	return filepath.Join(os.TempDir(), snapshotFileName)
}

// New is the constructor go-pdk calls for every plugin instance (and once to learn the
// config type). It only allocates: the config is resolved when go-pdk decodes it.
func (rt *Runtime) New() any { return &Config{rt: rt} }

// Describe is a constructor for -dump, which needs only the config type: it starts nothing.
func Describe() any { return &Config{} }

// newInstance resolves one instance config. Called by go-pdk's StartInstance, on the
// connection's goroutine.
func (rt *Runtime) newInstance(c *Config, kf kongFields, decodeErr error) *instance {
	s, err := rt.env.resolve(c)
	in := &instance{seq: kf.Seq, rt: rt, s: s, known: scopeIDs{serviceID: rawString(kf.ServiceID), routeID: rawString(kf.RouteID)}}
	if err = errors.Join(decodeErr, err); err != nil {
		in.err = err
		mode := "closed"
		if s.failOpen {
			mode = "open"
		}
		rt.log.Error().Int("instance", kf.Seq).Err(err).Str("answers", mode).
			Msg("noname-prevention: plugin instance refused: invalid config")
		return in
	}
	in.mirror = rt.mirror(s.loc)
	in.resp = newResponse(s)
	rt.log.Info().Int("instance", kf.Seq).Str("bucket", s.loc.bucket).Str("nats", redactURL(s.loc.url)).
		Bool("fail_open", s.failOpen).Int("status", s.status).Str("service_id", in.known.serviceID).
		Str("route_id", in.known.routeID).Msg("plugin instance started")
	return in
}

// mirror returns the mirror of loc, starting it on first use.
func (rt *Runtime) mirror(loc location) *Mirror {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if m, ok := rt.mirrors[loc]; ok {
		return m
	}
	cfg := rt.mirrorBase
	cfg.loc = loc
	cfg.log = rt.log.With().Str("bucket", loc.bucket).Str("nats", redactURL(loc.url)).Logger()
	if rt.snapshotPath != "" {
		cfg.snapshotPath = rt.snapshotPath
		if loc != rt.defLoc {
			// Another location than the environment's: its own file beside the default one.
			sum := sha256.Sum256([]byte(loc.url + "\x00" + loc.creds + "\x00" + loc.bucket))
			cfg.snapshotPath += "." + hex.EncodeToString(sum[:4])
		}
	}
	m := newMirror(cfg)
	if err := rt.reg.Register(newMirrorCollector(m)); err != nil {
		rt.log.Warn().Err(err).Msg("register mirror metrics")
	}
	rt.mirrors[loc] = m
	if cfg.snapshotPath != "" {
		// Here, not only in run: the plugin server must not answer a request before the
		// snapshot is in place, or a restarted node lets blocked clients through (fail open)
		// or refuses everyone (fail closed) while it loads. The default location's mirror is
		// created before go-pdk listens; another location's, before its instance starts.
		m.loadSnapshot()
	}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		m.run(rt.ctx)
	}()
	return m
}

func (rt *Runtime) serveMetrics(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		rt.log.Error().Err(err).Str("addr", addr).Msg("metrics endpoint not started")
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(rt.reg, promhttp.HandlerOpts{Registry: rt.reg}))
	rt.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		if err := rt.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rt.log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	rt.log.Info().Str("addr", ln.Addr().String()).Msg("metrics endpoint listening")
}

// firstAuthPriority is the lowest priority of Kong's bundled authentication plugins
// (hmac-auth, 1030). A plugin at or above it may run before the consumer is known.
const firstAuthPriority = 1030

// logLoop writes one status line per mirror every logEvery, so Kong's log shows that the
// block list is current without a metrics stack.
func (rt *Runtime) logLoop() {
	defer rt.wg.Done()
	t := time.NewTicker(rt.logEvery)
	defer t.Stop()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case now := <-t.C:
			rt.mu.Lock()
			ms := make([]*Mirror, 0, len(rt.mirrors))
			for _, m := range rt.mirrors {
				ms = append(ms, m)
			}
			rt.mu.Unlock()
			for _, m := range ms {
				rt.logStatus(m, now)
			}
		}
	}
}

func (rt *Runtime) logStatus(m *Mirror, now time.Time) {
	st := m.Status(now)
	ev := rt.log.Info().Str("bucket", m.cfg.loc.bucket).Bool("synced", st.Synced).
		Bool("connected", st.Connected).Int64("entries", st.Entries).
		Dur("staleness", st.Staleness).Dur("last_update_age", st.LastUpdateAge)
	for i, k := range kindsByIndex {
		ev = ev.Int64(string(k), st.ByKind[i])
	}
	ev.Msg("enforcer status")
	if n := st.ByKind[kindIndex(schemas.EntityConsumer)]; n > 0 && rt.priority >= firstAuthPriority {
		rt.log.Warn().Str("bucket", m.cfg.loc.bucket).Int("priority", rt.priority).Int64("consumer_blocks", n).
			Msg("consumer blocks cannot match: the plugin runs before authentication; set BLOCKWIRE_ENFORCER_PRIORITY=1000, or let the Kong sync enforce them")
	}
}

// Close stops every mirror, each writing a last snapshot, and the metrics endpoint; ctx
// bounds the wait.
func (rt *Runtime) Close(ctx context.Context) error {
	var err error
	rt.closeOnce.Do(func() {
		rt.cancel()
		if rt.srv != nil {
			err = rt.srv.Shutdown(ctx)
		}
		done := make(chan struct{})
		go func() { rt.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = errors.Join(err, fmt.Errorf("stop mirrors: %w", ctx.Err()))
		}
	})
	return err
}
