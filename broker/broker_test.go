package broker_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens a broker and closes it at the end of the test.
func open(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Open(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// syncBuffer collects log output written from nats callback goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestOpenEmbeddedAndClose(t *testing.T) {
	ctx := testCtx(t)
	b, err := broker.Open(ctx, broker.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Embedded() {
		t.Error("Embedded() = false")
	}
	if strings.HasSuffix(b.ClientURL(), ":-1") || !strings.HasPrefix(b.ClientURL(), "nats://127.0.0.1:") {
		t.Errorf("ClientURL() = %q, want the real port", b.ClientURL())
	}
	// Another process reaches it over TCP.
	if err := natstest.Connect(t, b.ClientURL()).Flush(); err != nil {
		t.Errorf("connect over ClientURL: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Ready(ctx); !errors.Is(err, broker.ErrNotConnected) {
		t.Errorf("Ready after Close = %v, want ErrNotConnected", err)
	}
}

func TestEmbeddedRestartKeepsMessages(t *testing.T) {
	ctx := testCtx(t)
	cfg := broker.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:-1"}

	b, err := broker.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	ack, err := b.JetStream().Publish(ctx, "noname.incidents.webhook", []byte(`{"id":"i1"}`), jetstream.WithMsgID("i1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}

	b = open(t, cfg)
	st, err := b.JetStream().Stream(ctx, broker.DefaultIncidentStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatalf("message %d after restart: %v", ack.Sequence, err)
	}
	if string(msg.Data) != `{"id":"i1"}` {
		t.Errorf("data after restart = %s", msg.Data)
	}
}

func TestEmbeddedPortInUseFailsFast(t *testing.T) {
	busy := natstest.Start(t)
	port := busy.Server().Addr().String()[len("127.0.0.1:"):]
	start := time.Now()
	_, err := broker.Open(testCtx(t), broker.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:" + port})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "start embedded nats") {
		t.Fatalf("Open on a busy port: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to fail", d)
	}
}

func TestEmbeddedAuth(t *testing.T) {
	b := open(t, broker.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:-1", Token: "embedded-token"})
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	// A client without the token is refused.
	if _, err := broker.Open(testCtx(t), broker.Config{URL: b.ClientURL()}); err == nil {
		t.Fatal("unauthenticated client connected to the embedded server")
	}
}

func TestExternalUserPassword(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "blockwire", "s3cret-pw" })
	logs := &syncBuffer{}
	b := open(t, broker.Config{URL: srv.URL(), User: "blockwire", Password: "s3cret-pw", Logger: zerolog.New(logs)})
	if b.Embedded() || b.ClientURL() != srv.URL() {
		t.Errorf("Embedded() = %v, ClientURL() = %q", b.Embedded(), b.ClientURL())
	}
	if err := b.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t) // provokes the disconnect and reconnect logs
	deadline := time.Now().Add(10 * time.Second)
	for !b.Conn().IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Ready(testCtx(t)); err != nil {
		t.Errorf("Ready after server restart: %v", err)
	}
	if err := b.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Contains(out, "s3cret-pw") || !strings.Contains(out, "reconnected") {
		t.Errorf("logs leak the password or miss the reconnect:\n%s", out)
	}

	_, err := broker.Open(testCtx(t), broker.Config{URL: srv.URL(), User: "blockwire", Password: "wrong"})
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestInvalidConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ext := "nats://127.0.0.1:1"
	tests := []struct {
		name string
		cfg  broker.Config
		want string
	}{
		{"cert without key", broker.Config{URL: ext, TLSCertFile: file}, "client certificate and key go together"},
		{"key without cert", broker.Config{URL: ext, TLSKeyFile: file}, "client certificate and key go together"},
		{"two auth methods", broker.Config{URL: ext, User: "u", Password: "p", Token: "t"}, "use one method, not user/password and token"},
		{"creds and nkey", broker.Config{URL: ext, CredsFile: file, NKeySeedFile: file}, "not creds file and nkey seed file"},
		{"url credentials and token", broker.Config{URL: "nats://u:p@127.0.0.1:1", Token: "t"}, "credentials in the URL"},
		{"user without password", broker.Config{URL: ext, User: "u"}, "user and password go together"},
		{"missing creds file", broker.Config{URL: ext, CredsFile: file + ".nope"}, "nats creds file"},
		{"creds with embedded", broker.Config{CredsFile: file}, "embedded nats: creds"},
		{"tls with embedded", broker.Config{TLSCAFile: file}, "TLS files apply to an external NATS URL only"},
		{"bad listen", broker.Config{Listen: "localhost"}, "parse listen address"},
		{"bad port", broker.Config{Listen: "127.0.0.1:99999"}, "port must be"},
		{"short duplicate window", broker.Config{Names: broker.Names{DuplicateWindow: 30 * time.Second}}, "DuplicateWindow 30s"},
		{"overlapping subjects", broker.Config{Names: broker.Names{AuditSubject: "noname.incidents.audit"}}, "overlap"},
		{"bad stream name", broker.Config{Names: broker.Names{IncidentStream: "a.b"}}, "IncidentStream"},
		{"bad replicas", broker.Config{Names: broker.Names{Replicas: 7}}, "Replicas 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := broker.Open(testCtx(t), tt.cfg)
			if err == nil {
				_ = b.Close(context.Background())
				t.Fatal("Open accepted an invalid config")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "invalid broker config") {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestReadyAfterStreamDeleted(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, broker.Config{URL: natstest.Start(t).URL()})
	if err := b.Ready(ctx); err == nil {
		t.Error("Ready before Provision = nil")
	}
	if err := b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready after Provision: %v", err)
	}
	if err := b.JetStream().DeleteStream(ctx, broker.DefaultIncidentStream); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(ctx); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("Ready after delete = %v, want ErrStreamNotFound", err)
	}
}

func TestServerTooOld(t *testing.T) {
	for _, tt := range []struct {
		version string
		want    error
	}{
		{"2.9.25", broker.ErrServerTooOld},
		{"2.10.22", broker.ErrServerTooOld},
		{"1.4.1", broker.ErrServerTooOld},
		{"2.11.0", nil},
		{"2.11.0-RC.1", nil},
		{"2.15.2", nil},
		{"3.0.0", nil},
	} {
		if err := broker.CheckServerVersion(tt.version); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("CheckServerVersion(%q) = %v, want %v", tt.version, err, tt.want)
		}
	}
	if err := broker.CheckServerVersion("junk"); err == nil {
		t.Error("unreadable version accepted")
	}
}
