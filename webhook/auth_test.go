package webhook_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

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
	bodyForm := func(method, target string, body []byte) *http.Request { // signed as POST /v1/incidents signs
		t.Helper()
		req := e.apiRequest(t, method, target, body)
		ts := req.Header.Get(webhook.HeaderTimestamp)
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

// rawRequest sends a hand-written request with valid credentials on a new
// connection, so its body can be malformed, and returns the answer.
func rawRequest(t *testing.T, url, method, target, extraHeaders, body string) (*http.Response, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := webhook.Sign([]byte(testSecret), ts, nil)
	head := method + " " + target + " HTTP/1.1\r\nHost: blockwire\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + testToken + "\r\n" +
		webhook.HeaderTimestamp + ": " + ts + "\r\n" +
		webhook.HeaderSignature + ": sha256=" + hex.EncodeToString(mac) + "\r\n" +
		extraHeaders + "Connection: close\r\n\r\n"
	if _, err := io.WriteString(conn, head+body); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil { // a body cut short ends here
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return resp, p
}

// metricsText is the API's /metrics page.
func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUnreadableBody: a body that cannot be read is a bad request (400,
// outcome bad_body); only a body over the limit is 413 (too_large).
func TestUnreadableBody(t *testing.T) {
	chunked := "Transfer-Encoding: chunked\r\n"
	tests := []struct {
		name, headers, body string
		status              int
		problem, outcome    string
	}{
		{"chunk size not hex", chunked, "zz\r\n{}\r\n0\r\n\r\n", http.StatusBadRequest, "bad-body", "bad_body"},
		{"chunk cut short", chunked, "40\r\n{\"id\":", http.StatusBadRequest, "bad-body", "bad_body"},
		{"body shorter than its Content-Length", "Content-Length: 60\r\n", `{"id":`, http.StatusBadRequest, "bad-body", "bad_body"},
		{"chunked body over the limit", chunked, "80\r\n" + strings.Repeat(" ", 128) + "\r\n0\r\n\r\n", http.StatusRequestEntityTooLarge, "too-large", "too_large"},
		{"Content-Length over the limit", "Content-Length: 65\r\n", strings.Repeat(" ", 65), http.StatusRequestEntityTooLarge, "too-large", "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *webhook.Config) { c.Auth.MaxBodyBytes = 64 })
			resp, p := rawRequest(t, e.url, http.MethodPost, "/v1/incidents", tt.headers, tt.body)
			if resp.StatusCode != tt.status || p["type"] != "https://blockwire.dev/problems/"+tt.problem {
				t.Fatalf("answered %d %v, want %d %s", resp.StatusCode, p, tt.status, tt.problem)
			}
			if want := `blockwire_webhook_requests_total{outcome="` + tt.outcome + `"} 1`; !strings.Contains(metricsText(t, e.url), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		})
	}
}

// TestEveryUnauthorizedChallenges: every 401 carries WWW-Authenticate
// (RFC 9110) naming each scheme the server requires.
func TestEveryUnauthorizedChallenges(t *testing.T) {
	const (
		bearer = `Bearer realm="blockwire"`
		hmac   = `Blockwire-HMAC-SHA256 realm="blockwire"`
	)
	configs := []struct {
		name       string
		auth       webhook.AuthConfig
		challenges []string
	}{
		{"token", webhook.AuthConfig{Tokens: []string{testToken}}, []string{bearer}},
		{"hmac", webhook.AuthConfig{HMACSecrets: []string{testSecret}}, []string{hmac}},
		{"both", webhook.AuthConfig{Tokens: []string{testToken}, HMACSecrets: []string{testSecret}}, []string{bearer, hmac}},
	}
	failures := []struct {
		name   string
		modify func(*http.Request)
	}{
		{"no credentials", func(r *http.Request) {
			for _, h := range []string{"Authorization", webhook.HeaderSignature, webhook.HeaderTimestamp} {
				r.Header.Del(h)
			}
		}},
		{"wrong token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer not-the-token-0123456789") }},
		{"stale timestamp", func(r *http.Request) {
			r.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10))
		}},
		{"wrong signature", func(r *http.Request) { r.Header.Set(webhook.HeaderSignature, "sha256="+strings.Repeat("ab", 32)) }},
	}
	for _, cfg := range configs {
		e := newEnv(t, func(c *webhook.Config) { c.Auth = cfg.auth })
		for _, f := range failures {
			for _, route := range []struct{ method, target, body string }{
				{http.MethodPost, "/v1/incidents", validIncident},
				{http.MethodGet, "/v1/blocks", ""},
				{http.MethodDelete, "/v1/blocks/ip.=.=.=.192_2E0_2E2_2E1", ""},
			} {
				t.Run(cfg.name+"/"+f.name+"/"+route.method+" "+route.target, func(t *testing.T) {
					req := e.apiRequest(t, route.method, route.target, []byte(route.body))
					if route.target == "/v1/incidents" {
						req = e.signedRequest(t, []byte(route.body))
					}
					f.modify(req)
					r := do(t, req)
					if r.status == http.StatusAccepted || r.status == http.StatusOK {
						return // this failure does not apply to this configuration
					}
					if r.status != http.StatusUnauthorized {
						t.Fatalf("status %d, want 401: %v", r.status, r.body)
					}
					if got := r.header.Values("WWW-Authenticate"); !slices.Equal(got, cfg.challenges) {
						t.Fatalf("WWW-Authenticate %q, want %q", got, cfg.challenges)
					}
				})
			}
		}
	}
}

// logBuffer collects a logger's output; handlers write to it concurrently.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAPIRefusalsAreCountedAndLogged: a request to the manual API or the
// audit trail refused before its handler is counted by route and outcome
// and logged with where it came from, never with its credentials.
func TestAPIRefusalsAreCountedAndLogged(t *testing.T) {
	const wrongToken = "wrong-token-guessed-0123456789"
	tests := []struct {
		name, method, target, body string
		modify                     func(*http.Request)
		route, outcome             string
	}{
		{"wrong token on the list", http.MethodGet, "/v1/blocks", "", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+wrongToken) }, "/v1/blocks", "unauthorized"},
		{"wrong signature on an unblock", http.MethodDelete, "/v1/blocks/ip.=.=.=.192_2E0_2E2_2E1", "", func(r *http.Request) {
			r.Header.Set(webhook.HeaderSignature, "sha256="+strings.Repeat("cd", 32))
		}, "/v1/blocks/{key}", "unauthorized"},
		{"no credentials on the audit trail", http.MethodGet, "/v1/audit", "", func(r *http.Request) { r.Header.Del("Authorization") }, "/v1/audit", "unauthorized"},
		{"block over the size limit", http.MethodPost, "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","reason":"` + strings.Repeat("r", 100) + `"}`, nil, "/v1/blocks", "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logBuffer{}
			e := newEnv(t, func(c *webhook.Config) {
				withAudit(t)(c)
				c.Auth.MaxBodyBytes = 64
				c.Logger = zerolog.New(logs)
			})
			req := e.apiRequest(t, tt.method, tt.target, []byte(tt.body))
			if tt.modify != nil {
				tt.modify(req)
			}
			sent := req.Header.Clone()
			if r := do(t, req); r.status < 400 {
				t.Fatalf("status %d, want a refusal", r.status)
			}
			want := `blockwire_api_refused_total{outcome="` + tt.outcome + `",route="` + tt.route + `"} 1`
			if m := metricsText(t, e.url); !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
			var found bool
			for line := range strings.Lines(logs.String()) {
				var entry map[string]any
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				remote, _ := entry["remote"].(string)
				reason, _ := entry["error"].(string)
				if entry["message"] == "api request refused" && entry["level"] == "warn" && entry["route"] == tt.route &&
					entry["outcome"] == tt.outcome && entry["method"] == tt.method && remote != "" && reason != "" {
					found = true
				}
			}
			if !found {
				t.Errorf("no warning naming the route, method, remote address and reason in the log:\n%s", logs)
			}
			for _, secret := range []string{testToken, wrongToken, testSecret, strings.TrimPrefix(sent.Get(webhook.HeaderSignature), "sha256=")} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds a credential %q:\n%s", secret, logs)
				}
			}
		})
	}
}
