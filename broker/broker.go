// Package broker connects blockwire to NATS JetStream — an embedded nats-server when no URL is
// configured, any external server (2.11+) otherwise — and provisions the streams and the KV
// bucket every other part relies on. It never changes the configuration of an existing asset:
// streams hold the audit trail, so a mismatch is reported for an operator to resolve.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

var (
	// ErrIncompatible is wrapped by every *IncompatibleError returned from Provision.
	ErrIncompatible = errors.New("incompatible jetstream asset")
	// ErrServerTooOld means the external server lacks per-message TTL and limit markers (2.11+).
	ErrServerTooOld = errors.New("nats server too old")
	// ErrNotConnected is returned by Ready when the connection is down or closed.
	ErrNotConnected = errors.New("not connected to nats")
)

const (
	defaultDataDir      = "./data"
	defaultListen       = "127.0.0.1:4222"
	defaultName         = "blockwire"
	defaultReadyTimeout = 10 * time.Second
	connectTimeout      = 5 * time.Second
)

// Config says where NATS is and how to reach it.
type Config struct {
	URL     string // external NATS URL(s), comma separated; empty → embedded server
	DataDir string // embedded: JetStream file store root, default "./data"
	Listen  string // embedded: host:port, default "127.0.0.1:4222"; port -1 picks a free one (tests)

	// Authentication, at most one method. External: any of them. Embedded: User+Password or
	// Token become the server's own client authorization (needed once Listen is not loopback,
	// e.g. for a Kong container); CredsFile and NKeySeedFile need an operator setup and are
	// refused there.
	CredsFile, NKeySeedFile, User, Password, Token string
	// External TLS; cert and key together.
	TLSCAFile, TLSCertFile, TLSKeyFile string

	Name   string         // connection name, default "blockwire"
	Names  Names          // asset names; zero fields take defaults
	Logger zerolog.Logger // zero value logs nothing
}

// Broker is an open NATS connection, plus the embedded server when there is one.
type Broker struct {
	log       zerolog.Logger
	names     Names
	srv       *server.Server // nil when external
	nc        *nats.Conn
	js        jetstream.JetStream
	clientURL string
	closed    chan struct{} // closed by the connection's ClosedHandler

	mu sync.Mutex
	kv jetstream.KeyValue // cached blocks bucket

	closeOnce sync.Once
	closeErr  error
}

// Open validates cfg, starts the embedded server or reaches the external one, and connects.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = defaultName
	}
	b := &Broker{log: cfg.Logger, names: cfg.Names.WithDefaults(), closed: make(chan struct{})}

	opts, err := b.connOptions(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		if err := b.startEmbedded(ctx, cfg); err != nil {
			return nil, err
		}
		opts = append(opts, nats.InProcessServer(b.srv))
	} else {
		b.clientURL = cfg.URL
	}
	opts = append(opts, nats.Timeout(timeoutFrom(ctx, connectTimeout)))

	b.nc, err = nats.Connect(b.clientURL, opts...)
	if err != nil {
		b.shutdownServer(ctx)
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if cfg.URL != "" {
		if err := checkServerVersion(b.nc.ConnectedServerVersion()); err != nil {
			b.nc.Close()
			return nil, fmt.Errorf("connect to nats at %s: %w", b.nc.ConnectedUrlRedacted(), err)
		}
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		_ = b.Close(ctx)
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	b.log.Info().Bool("embedded", b.srv != nil).Str("server_version", b.nc.ConnectedServerVersion()).
		Str("url", redactURLs(b.clientURL)).Msg("connected to nats")
	return b, nil
}

// connOptions builds the nats.go options: reconnect forever (a broker outage must not stop the
// daemon for good), jittered so a fleet of Kong nodes does not reconnect in lockstep.
func (b *Broker) connOptions(cfg Config) ([]nats.Option, error) {
	log := b.log
	closed := b.closed
	var once sync.Once
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		// No reconnect buffer: a publish while disconnected fails at once
		// (the webhook answers 503 now) instead of being sent after the
		// reconnect, when its sender has already been told it failed.
		nats.ReconnectBufSize(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil { // nil on a deliberate Close/Drain
				log.Warn().Err(err).Str("url", nc.ConnectedUrlRedacted()).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("load nkey seed file: %w", err)
		}
		opts = append(opts, o)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCAFile))
	}
	if cfg.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCertFile, cfg.TLSKeyFile))
	}
	return opts, nil
}

// startEmbedded runs nats-server in this process with JetStream on a file store.
func (b *Broker) startEmbedded(ctx context.Context, cfg Config) error {
	host, port, err := parseListen(cfg.Listen)
	if err != nil {
		return err
	}
	dir := cfg.DataDir
	if dir == "" {
		dir = defaultDataDir
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true, // signals belong to the blockwire process, which calls Close
		Username:   cfg.User,
		Password:   cfg.Password,
		// Authorization is the server's token setting.
		Authorization: cfg.Token,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("start embedded nats: %w", err)
	}
	logs := &serverLogger{log: b.log.With().Str("component", "nats-server").Logger(), fatal: make(chan string, 1)}
	srv.SetLogger(logs, false, false)
	srv.Start()
	b.srv = srv

	// Poll in short steps so both ctx and a fatal server error (port in use) end the wait early.
	deadline := time.Now().Add(timeoutFrom(ctx, defaultReadyTimeout))
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		var cause error
		select {
		case msg := <-logs.fatal:
			cause = errors.New(msg)
		case <-ctx.Done():
			cause = ctx.Err()
		default:
			if time.Now().After(deadline) {
				cause = errors.New("not ready for connections in time")
			}
		}
		if cause != nil {
			b.shutdownServer(ctx)
			return fmt.Errorf("start embedded nats on %s: %w", cfg.Listen, cause)
		}
	}
	b.clientURL = reachableURL(srv.ClientURL())
	if cfg.User == "" && cfg.Token == "" && !isLoopback(host) {
		b.log.Warn().Str("listen", cfg.Listen).Msg("embedded nats listens beyond loopback without authentication; set a token or user/password")
	}
	b.log.Info().Str("url", b.clientURL).Str("store_dir", dir).Msg("embedded nats started")
	return nil
}

// Conn is the underlying connection.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream context on Conn.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// Names are the asset names in use, defaults applied.
func (b *Broker) Names() Names { return b.names }

// ClientURL is what other processes (the CLI, the Kong plugin) use to reach this NATS.
func (b *Broker) ClientURL() string { return b.clientURL }

// Embedded reports whether the server runs inside this process.
func (b *Broker) Embedded() bool { return b.srv != nil }

// Blocks returns the blocks KV bucket, bound by Provision or looked up on first use (processes
// such as the CLI use the bucket without provisioning).
func (b *Broker) Blocks(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	kv, err := b.js.KeyValue(ctx, b.names.BlocksBucket)
	if err != nil {
		return nil, fmt.Errorf("bind kv bucket %s: %w", b.names.BlocksBucket, err)
	}
	b.kv = kv
	return kv, nil
}

// Ready is nil when the connection is up and the incident stream exists (for /readyz).
func (b *Broker) Ready(ctx context.Context) error {
	if b.nc == nil || !b.nc.IsConnected() {
		return ErrNotConnected
	}
	if _, err := b.js.Stream(ctx, b.names.IncidentStream); err != nil {
		return fmt.Errorf("look up stream %s: %w", b.names.IncidentStream, err)
	}
	return nil
}

// Close drains the connection (pending publishes are flushed, bounded by ctx), then shuts the
// embedded server down. Safe to call more than once; later calls return the first result.
func (b *Broker) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		var errs []error
		if b.nc != nil {
			if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("drain nats connection: %w", err))
				b.nc.Close()
			}
			select {
			case <-b.closed:
			case <-ctx.Done():
				b.nc.Close()
				errs = append(errs, fmt.Errorf("drain nats connection: %w", ctx.Err()))
			}
		}
		errs = append(errs, b.shutdownServer(ctx))
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// shutdownServer stops the embedded server, if any, and waits for it within ctx.
func (b *Broker) shutdownServer(ctx context.Context) error {
	if b.srv == nil {
		return nil
	}
	b.srv.Shutdown()
	done := make(chan struct{})
	go func() { b.srv.WaitForShutdown(); close(done) }()
	select {
	case <-done:
		b.log.Info().Msg("embedded nats stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for embedded nats shutdown: %w", ctx.Err())
	}
}

// timeoutFrom is def, shortened to what is left of ctx's deadline.
func timeoutFrom(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < def {
			return max(left, time.Millisecond)
		}
	}
	return def
}

// parseListen splits "host:port"; port -1 asks the server for a free port.
func parseListen(listen string) (string, int, error) {
	if listen == "" {
		listen = defaultListen
	}
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("parse listen address %q: %w", listen, err)
	}
	var port int
	if _, err := fmt.Sscan(p, &port); err != nil || port < -1 || port > 65535 || fmt.Sprint(port) != p {
		return "", 0, fmt.Errorf("parse listen address %q: port must be -1 or 0-65535", listen)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// reachableURL replaces a wildcard listen host (0.0.0.0, ::) with loopback, which is what a
// process on the same host must dial.
func reachableURL(u string) string {
	for _, wild := range []string{"//0.0.0.0:", "//[::]:"} {
		if strings.Contains(u, wild) {
			return strings.Replace(u, wild, "//127.0.0.1:", 1)
		}
	}
	return u
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// serverLogger routes nats-server's log lines to zerolog. Fatalf must not exit the process
// (nats-server's own logger does); it reports the failure so Open can return it.
type serverLogger struct {
	log   zerolog.Logger
	fatal chan string
}

func (l *serverLogger) Noticef(f string, v ...any) { l.log.Info().Msgf(f, v...) }
func (l *serverLogger) Warnf(f string, v ...any)   { l.log.Warn().Msgf(f, v...) }
func (l *serverLogger) Errorf(f string, v ...any)  { l.log.Error().Msgf(f, v...) }
func (l *serverLogger) Debugf(f string, v ...any)  { l.log.Debug().Msgf(f, v...) }
func (l *serverLogger) Tracef(f string, v ...any)  { l.log.Trace().Msgf(f, v...) }
func (l *serverLogger) Fatalf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	l.log.Error().Msg(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
