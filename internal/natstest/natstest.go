// Package natstest runs a real nats-server with JetStream inside a test, so tests of streams,
// KV and consumers exercise the server blockwire ships with instead of a mock.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is an embedded nats-server owned by one test. Restart must not race with other calls.
type Server struct {
	opts *server.Options
	srv  *server.Server
}

// Start runs a fresh server on 127.0.0.1 with a random port and a file store in t.TempDir(),
// shut down by t.Cleanup. configure may adjust the options (auth, limits) before start.
func Start(t testing.TB, configure ...func(*server.Options)) *Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	for _, c := range configure {
		c(opts)
	}
	s := &Server{opts: opts}
	s.start(t)
	t.Cleanup(s.shutdown)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	srv, err := server.NewServer(s.opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatalf("natstest: server not ready")
	}
	s.srv = srv
	// Pin the port the OS picked so Restart comes back where clients reconnect.
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
}

func (s *Server) shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Restart shuts the server down and starts it again on the same port and store dir, as a
// process restart would: what JetStream stored on file must still be there.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.shutdown()
	s.start(t)
}

// URL is the client URL, e.g. nats://127.0.0.1:41234.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Server is the running nats-server.
func (s *Server) Server() *server.Server { return s.srv }

// StoreDir is the JetStream store root.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Connect opens a client connection closed by t.Cleanup. It retries quickly across a Restart.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
