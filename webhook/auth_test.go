package webhook_test

import (
	"bytes"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/webhook"
)

// recorder is a transport that keeps the last request it sent, as an
// eavesdropper on the wire would.
type recorder struct {
	mu   sync.Mutex
	last *http.Request
	body []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		body, err = io.ReadAll(rc)
		if err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	r.last, r.body = req.Clone(req.Context()), body
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *recorder) lastHeader() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last.Header.Clone()
}

// replay sends the last request again, byte for byte.
func (r *recorder) replay(t *testing.T) response {
	t.Helper()
	r.mu.Lock()
	req, err := http.NewRequest(r.last.Method, r.last.URL.String(), bytes.NewReader(r.body))
	if err != nil {
		r.mu.Unlock()
		t.Fatal(err)
	}
	req.Header = r.last.Header.Clone()
	r.mu.Unlock()
	return do(t, req)
}

// withAudit serves GET /v1/audit too.
func withAudit(t *testing.T) func(*webhook.Config) {
	t.Helper()
	return func(c *webhook.Config) {
		r, err := replay.NewReader(c.Publisher.(jetstream.JetStream), broker.Names{})
		if err != nil {
			t.Fatal(err)
		}
		c.Audit = r
	}
}

// TestSignatureCoversTheRequest: the signature of a manual API request
// covers its method and request-target, so a captured signed GET cannot be
// replayed as another request; only POST /v1/incidents keeps the
// timestamp-and-body form of the webhook senders.
func TestSignatureCoversTheRequest(t *testing.T) {
	e := newEnv(t, withAudit(t))
	rec := &recorder{}
	c, err := webhook.NewClient(webhook.ClientConfig{URL: e.url, Token: testToken, HMACSecret: testSecret, HTTP: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Blocks(t.Context(), "", 0); err != nil { // GET /v1/blocks, empty body
		t.Fatal(err)
	}
	captured := rec.lastHeader()
	before := e.streamMsgs(t)

	tests := []struct {
		name, method, target string
		status               int
	}{
		{"the captured request itself", http.MethodGet, "/v1/blocks", http.StatusOK},
		{"replayed as an unblock of any key", http.MethodDelete, "/v1/blocks/ip.=.=.=.192_2E0_2E2_2E1?actor=anyone", http.StatusUnauthorized},
		{"replayed as an unblock without a query", http.MethodDelete, "/v1/blocks/ip.=.=.=.192_2E0_2E2_2E1", http.StatusUnauthorized},
		{"replayed with another query", http.MethodGet, "/v1/blocks?kind=ip", http.StatusUnauthorized},
		{"replayed on another route", http.MethodGet, "/v1/audit", http.StatusUnauthorized},
		{"replayed as an empty incident", http.MethodPost, "/v1/incidents", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, e.url+tt.target, http.NoBody)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = captured.Clone()
			req.Header.Set("Content-Type", "application/json")
			if r := do(t, req); r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
			if n := e.streamMsgs(t); n != before {
				t.Fatalf("stream holds %d messages, want %d", n, before)
			}
		})
	}
}

// TestSignatureForms: each route verifies its own form and refuses the other.
func TestSignatureForms(t *testing.T) {
	e := newEnv(t, nil)
	block := []byte(`{"kind":"ip","value":"192.0.2.77","actor":"alice"}`)
	bodyForm := func(method, target string, body []byte) *http.Request {
		t.Helper()
		req, err := http.NewRequest(method, e.url+target, bytes.NewReader(body))
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
	tests := []struct {
		name   string
		req    *http.Request
		status int
	}{
		{"incident signed over timestamp and body", bodyForm(http.MethodPost, "/v1/incidents", []byte(validIncident)), http.StatusAccepted},
		{"incident signed in the request form", e.apiRequest(t, http.MethodPost, "/v1/incidents", []byte(validIncident)), http.StatusUnauthorized},
		{"manual block signed over timestamp and body", bodyForm(http.MethodPost, "/v1/blocks", block), http.StatusUnauthorized},
		{"manual block signed in the request form", e.apiRequest(t, http.MethodPost, "/v1/blocks", block), http.StatusAccepted},
		{"list signed over timestamp and body", bodyForm(http.MethodGet, "/v1/blocks", nil), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, tt.req); r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
		})
	}
}

// TestSignedManualActionReplayedIsStoredOnce: a signed manual action sent
// again (a replay within the accepted skew) is the same incident, answered
// as a duplicate and stored once; with a bearer token only, each request is
// a new action.
func TestSignedManualActionReplayedIsStoredOnce(t *testing.T) {
	bearerOnly := func(c *webhook.Config) { c.Auth = webhook.AuthConfig{Tokens: []string{testToken}} }
	tests := []struct {
		name   string
		mutate func(*webhook.Config)
		secret string
		act    func(t *testing.T, c *webhook.Client) (*webhook.ManualAccepted, error)
		stored uint64 // messages after three sends
	}{
		{"signed block", nil, testSecret, func(t *testing.T, c *webhook.Client) (*webhook.ManualAccepted, error) {
			return c.Block(t.Context(), webhook.BlockRequest{Kind: "ip", Value: "192.0.2.10", Actor: "alice"})
		}, 1},
		{"signed unblock", nil, testSecret, func(t *testing.T, c *webhook.Client) (*webhook.ManualAccepted, error) {
			return c.Unblock(t.Context(), "ip.=.=.=.192_2E0_2E2_2E10", "alice")
		}, 1},
		{"bearer token only", bearerOnly, "", func(t *testing.T, c *webhook.Client) (*webhook.ManualAccepted, error) {
			return c.Block(t.Context(), webhook.BlockRequest{Kind: "ip", Value: "192.0.2.10", Actor: "alice"})
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mutate)
			rec := &recorder{}
			c, err := webhook.NewClient(webhook.ClientConfig{URL: e.url, Token: testToken, HMACSecret: tt.secret, HTTP: &http.Client{Transport: rec}})
			if err != nil {
				t.Fatal(err)
			}
			first, err := tt.act(t, c)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				r := rec.replay(t)
				if r.status != http.StatusAccepted {
					t.Fatalf("replay answered %d: %v", r.status, r.body)
				}
				if tt.stored == 1 && (r.body["duplicate"] != true || r.body["id"] != first.ID || r.body["seq"] != float64(first.Seq)) {
					t.Errorf("replay answered %v, want a duplicate of %+v", r.body, first)
				}
			}
			if n := e.streamMsgs(t); n != tt.stored {
				t.Fatalf("stream holds %d messages after three sends, want %d", n, tt.stored)
			}
		})
	}
}
