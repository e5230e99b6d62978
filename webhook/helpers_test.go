package webhook_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/webhook"
)

const (
	testToken  = "test-token-0123456789abcdef"
	testSecret = "test-hmac-secret-0123456789"
)

// env is one API under test on its own embedded NATS.
type env struct {
	url    string
	nats   *natstest.Server
	broker *broker.Broker
	js     jetstream.JetStream
	now    time.Time
}

// newEnv starts a fresh NATS, provisions it and serves the API with both a
// bearer token and an HMAC secret required.
func newEnv(t *testing.T, mutate func(*webhook.Config)) *env {
	t.Helper()
	srv := natstest.Start(t)
	b := natstest.Provisioned(t, srv.URL())
	e := &env{nats: srv, broker: b, js: b.JetStream(), now: time.Now()}
	lister, err := consumer.NewLister(b.JetStream(), b.Names().BlocksBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := webhook.Config{
		Blocks:         &webhook.BlocksConfig{Lister: lister, Preflight: consumer.Guardrails{}.Preflight},
		Publisher:      b.JetStream(),
		Ready:          b,
		Connected:      b.Conn().IsConnected,
		Auth:           webhook.AuthConfig{Tokens: []string{testToken}, HMACSecrets: []string{testSecret}},
		PublishTimeout: 2 * time.Second,
		Registry:       prometheus.NewRegistry(),
		Logger:         zerolog.Nop(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := webhook.New(cfg)
	if err != nil {
		t.Fatalf("new webhook: %v", err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return e
}

// signedRequest builds a POST /v1/incidents that passes authentication: the
// signature covers the timestamp and the body.
func (e *env) signedRequest(t *testing.T, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/incidents", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set(webhook.HeaderTimestamp, ts)
	req.Header.Set(webhook.HeaderSignature, "sha256="+hex.EncodeToString(webhook.Sign([]byte(testSecret), ts, body)))
	return req
}

// apiRequest builds a request to the manual API or the audit trail that
// passes authentication: the signature covers the timestamp, the method,
// the request-target (path and query) and the body.
func (e *env) apiRequest(t *testing.T, method, target string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set(webhook.HeaderTimestamp, ts)
	mac := webhook.SignRequest([]byte(testSecret), ts, method, req.URL.RequestURI(), body)
	req.Header.Set(webhook.HeaderSignature, "sha256="+hex.EncodeToString(mac))
	return req
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header}
	if buf.Len() > 0 {
		if err := json.Unmarshal(buf.Bytes(), &r.body); err != nil {
			t.Fatalf("answer is not JSON: %v: %q", err, buf.String())
		}
	}
	return r
}

// streamMsgs is the number of messages stored in the incident stream.
func (e *env) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.broker.Names().IncidentStream)
	if err != nil {
		t.Fatalf("look up stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func zeroLog() zerolog.Logger { return zerolog.Nop() }

// runConsumer applies stored incidents until the test ends.
func (e *env) runConsumer(t *testing.T) {
	t.Helper()
	c, err := consumer.New(context.Background(), consumer.Config{
		JS: e.js, Conn: e.broker.Conn(), Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
}

// client returns an API client with the test's credentials.
func (e *env) client(t *testing.T) *webhook.Client {
	t.Helper()
	c, err := webhook.NewClient(webhook.ClientConfig{URL: e.url, Token: testToken, HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
