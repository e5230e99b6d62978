package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

// Plugin binaries are built once per test binary: go build is the slow part of these tests.
// The plugin is built with -race when the tests are, so a race in the real process fails the
// test that provoked it.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	builds   sync.Map // variant → *build
	buildDir struct {
		once sync.Once
		dir  string
		err  error
	}
)

// Variants: the plugin as shipped, the plugin with its test hooks, and the reference plugins.
var variants = map[string]struct {
	pkg, name string
	tags      string
	race      bool
}{
	"plugin": {pkg: "github.com/blockwire/blockwire/cmd/noname-prevention", name: "noname-prevention", race: true},
	"hooks":  {pkg: "github.com/blockwire/blockwire/cmd/noname-prevention", name: "noname-prevention", tags: "enforcer_testhooks", race: true},
	// The benchmarks compare the plugin with these: never build any of them with -race there.
	"bench-plugin": {pkg: "github.com/blockwire/blockwire/cmd/noname-prevention", name: "noname-prevention"},
	"noop":         {pkg: "github.com/blockwire/blockwire/internal/refplugins/noop", name: "noop"},
	"calls":        {pkg: "github.com/blockwire/blockwire/internal/refplugins/calls", name: "calls"},
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopBenchStore()
	if buildDir.dir != "" {
		_ = os.RemoveAll(buildDir.dir)
	}
	os.Exit(code)
}

// binary returns the path of a built variant; its file name is the plugin's name.
func pluginBinary(tb testing.TB, variant string) string {
	tb.Helper()
	buildDir.once.Do(func() { buildDir.dir, buildDir.err = os.MkdirTemp("", "np-bin") })
	if buildDir.err != nil {
		tb.Fatal(buildDir.err)
	}
	v, ok := variants[variant]
	if !ok {
		tb.Fatalf("unknown variant %q", variant)
	}
	bv, _ := builds.LoadOrStore(variant, &build{})
	b := bv.(*build)
	b.once.Do(func() {
		dir := filepath.Join(buildDir.dir, variant)
		b.path = filepath.Join(dir, v.name)
		args := []string{"build", "-o", b.path}
		if v.race && raceEnabled {
			args = append(args, "-race")
		}
		if v.tags != "" {
			args = append(args, "-tags", v.tags)
		}
		out, err := exec.Command("go", append(args, v.pkg)...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", variant, err, out)
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// logBuffer collects a plugin's output for assertions and echoes it to the test log.
type logBuffer struct {
	tb  testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	if testing.Verbose() {
		l.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// plugin is one plugin server process driven as Kong would.
type plugin struct {
	d   *kongdriver.Driver
	log *logBuffer
}

// startPlugin runs a variant with env until the test ends.
func startPlugin(tb testing.TB, variant string, env ...string) *plugin {
	tb.Helper()
	lb := &logBuffer{tb: tb}
	d, err := kongdriver.Start(testContext(tb), kongdriver.Config{Binary: pluginBinary(tb, variant), Env: env, Stdout: lb, Stderr: lb})
	if err != nil {
		tb.Fatalf("start %s: %v", variant, err)
	}
	p := &plugin{d: d, log: lb}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("close plugin: %v", err)
		}
		if strings.Contains(lb.String(), "WARNING: DATA RACE") {
			tb.Errorf("the plugin process reported a data race")
		}
	})
	return p
}

func (p *plugin) instance(tb testing.TB, config map[string]any) *kongdriver.Instance {
	tb.Helper()
	inst, err := p.d.StartInstance(testContext(tb), config)
	if err != nil {
		tb.Fatalf("start instance %v: %v", config, err)
	}
	return inst
}

// pluginEnv is the environment of a plugin reading natsURL, with its snapshot in dir.
func pluginEnv(natsURL, snapshot string, extra ...string) []string {
	return append([]string{
		"BLOCKWIRE_NATS_URL=" + natsURL,
		"BLOCKWIRE_ENFORCER_SNAPSHOT=" + snapshot,
		"BLOCKWIRE_ENFORCER_LOG_LEVEL=debug",
	}, extra...)
}

func access(tb testing.TB, inst *kongdriver.Instance, req kongdriver.Request) *kongdriver.Result {
	tb.Helper()
	res, err := inst.Access(testContext(tb), req)
	if err != nil {
		tb.Fatalf("access: %v", err)
	}
	return res
}

// waitFor polls until the request gets status (0: allowed); no fixed sleeps, so a slow
// machine only makes the test slower.
func waitFor(tb testing.TB, inst *kongdriver.Instance, req kongdriver.Request, status int) *kongdriver.Result {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := access(tb, inst, req)
		if res.Status == status && res.Allowed == (status == 0) {
			return res
		}
		if time.Now().After(deadline) {
			tb.Fatalf("request %+v: got status %d (allowed %v), still not %d after 30s", req, res.Status, res.Allowed, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testContext bounds every wait so a protocol bug fails the test instead of hanging it.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

const webhookToken = "test-token-0123456789abcdef"

// stack is blockwire's side: NATS with the bucket, and optionally the webhook and the
// consumer that turn incidents into blocks.
type stack struct {
	nats *natstest.Server
	b    *broker.Broker
	kv   jetstream.KeyValue
	url  string // the webhook; "" without the pipeline
}

func newStack(tb testing.TB, pipeline bool, guard consumer.Guardrails) *stack {
	tb.Helper()
	ctx := context.Background()
	srv := natstest.Start(tb)
	b := natstest.Provisioned(tb, srv.URL())
	kv, err := b.Blocks(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	s := &stack{nats: srv, b: b, kv: kv}
	if !pipeline {
		return s
	}
	h, err := webhook.New(webhook.Config{
		Publisher: b.JetStream(), Ready: b, Connected: b.Conn().IsConnected,
		Auth:     webhook.AuthConfig{Tokens: []string{webhookToken}},
		Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(h)
	tb.Cleanup(hs.Close)
	s.url = hs.URL
	c, err := consumer.New(ctx, consumer.Config{
		JS: b.JetStream(), Conn: b.Conn(), Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(), Guardrails: guard,
	})
	if err != nil {
		tb.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("consumer: %v", err)
		}
	})
	return s
}

// post sends an incident to the webhook and returns once it answered 202 (stored).
func (s *stack) post(tb testing.TB, inc schemas.Incident) {
	tb.Helper()
	body, err := json.Marshal(inc)
	if err != nil {
		tb.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/incidents", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		tb.Fatalf("POST incident: %d %s", resp.StatusCode, b.String())
	}
}

// put writes a block straight into the bucket, as the consumer would.
func (s *stack) put(tb testing.TB, parts schemas.KeyParts, expires time.Time) string {
	tb.Helper()
	key, err := schemas.BlockKey(parts)
	if err != nil {
		tb.Fatal(err)
	}
	b := schemas.Block{Kind: parts.Kind, Name: parts.Name, CreatedAt: time.Now().UTC(), ExpiresAt: expires.UTC(), Source: schemas.SourceManual}
	if parts.Service != "" || parts.Route != "" {
		b.Scope = &schemas.Scope{Service: parts.Service, Route: parts.Route}
	}
	data, err := json.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.kv.Put(context.Background(), key, data); err != nil {
		tb.Fatal(err)
	}
	return key
}

// deadURL is a NATS URL where nothing listens.
func deadURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "nats://" + addr
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// serveHTTP serves h until the test ends and returns its URL.
func serveHTTP(tb testing.TB, h http.Handler) string {
	tb.Helper()
	hs := httptest.NewServer(h)
	tb.Cleanup(hs.Close)
	return hs.URL
}

// logSays reports whether the plugin's log comes to contain s within 30 s: its stderr is
// copied by another goroutine, so a line written before an answer may arrive after it.
func logSays(p *plugin, s string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.log.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
