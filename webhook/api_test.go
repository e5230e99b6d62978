package webhook_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

func TestAcceptStoresOnceAndReportsDuplicates(t *testing.T) {
	e := newEnv(t, nil)
	first := do(t, e.signedRequest(t, []byte(validIncident)))
	if first.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %v", first.status, first.body)
	}
	if first.body["id"] != "inc-1" || first.body["duplicate"] != false || first.body["seq"].(float64) < 1 {
		t.Fatalf("answer %v, want id inc-1, a sequence and duplicate false", first.body)
	}
	again := do(t, e.signedRequest(t, []byte(validIncident)))
	if again.status != http.StatusAccepted || again.body["duplicate"] != true || again.body["seq"] != first.body["seq"] {
		t.Fatalf("retry answered %d %v, want 202 duplicate with seq %v", again.status, again.body, first.body["seq"])
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}

	// The stored message is the body as received but for the header's
	// value, a secret, replaced by its SHA-256; the dedup id is the digest of
	// the body as received.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.broker.Names().IncidentStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, uint64(first.body["seq"].(float64)))
	if err != nil {
		t.Fatalf("get stored message: %v", err)
	}
	sum := sha256.Sum256([]byte("k-123"))
	want := strings.Replace(validIncident, `"value":"k-123"`, `"valueSha256":"`+hex.EncodeToString(sum[:])+`"`, 1)
	if string(msg.Data) != want || msg.Subject != "noname.incidents.webhook" {
		t.Errorf("stored %q on %s, want %q on noname.incidents.webhook", msg.Data, msg.Subject, want)
	}
	inc, err := schemas.ParseIncident([]byte(validIncident))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Nats-Msg-Id") != webhook.MsgID(inc, []byte(validIncident)) || msg.Header.Get(schemas.HeaderSource) != "webhook" {
		t.Errorf("stored headers %v lack the dedup id or source", msg.Header)
	}
}

func TestAuthModes(t *testing.T) {
	tests := []struct {
		name   string
		auth   webhook.AuthConfig
		header map[string]string
		status int
	}{
		{"token only, lower-case scheme", webhook.AuthConfig{Tokens: []string{testToken}}, map[string]string{"Authorization": "bearer " + testToken}, 202},
		{"second token of a rotation", webhook.AuthConfig{Tokens: []string{"old-token-0123456789abc", testToken}}, map[string]string{"Authorization": "Bearer " + testToken}, 202},
		{"token only, missing", webhook.AuthConfig{Tokens: []string{testToken}}, nil, 401},
		{"demo mode", webhook.AuthConfig{AllowUnauthenticated: true}, nil, 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *webhook.Config) { c.Auth = tt.auth })
			req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/incidents", strings.NewReader(validIncident))
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			if r := do(t, req); r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
		})
	}
}

func TestRefusesToStartWithoutAuth(t *testing.T) {
	tests := []struct {
		name string
		auth webhook.AuthConfig
		want string
	}{
		{"nothing configured", webhook.AuthConfig{}, "no webhook token"},
		{"short token", webhook.AuthConfig{Tokens: []string{"short"}}, "shorter than"},
		{"short secret", webhook.AuthConfig{HMACSecrets: []string{"short"}}, "shorter than"},
		{"skew over half the default duplicate window", webhook.AuthConfig{HMACSecrets: []string{testSecret}, MaxSkew: 5*time.Minute + time.Second}, "half the incident stream's duplicate window"},
		{"skew over half a shorter duplicate window", webhook.AuthConfig{HMACSecrets: []string{testSecret}, MaxSkew: 2 * time.Minute, DuplicateWindow: 3 * time.Minute}, "half the incident stream's duplicate window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := webhook.NewAuthenticator(tt.auth, zeroLog())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, nil)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, e.url+"/v1/incidents", nil)
		r := do(t, req)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != http.MethodPost {
			t.Errorf("%s: status %d Allow %q, want 405 Allow POST", m, r.status, r.header.Get("Allow"))
		}
	}
}

func TestUnavailableWhenNATSIsDown(t *testing.T) {
	e := newEnv(t, nil)
	e.nats.Server().Shutdown()
	e.nats.Server().WaitForShutdown()
	r := do(t, e.signedRequest(t, []byte(validIncident)))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	ready, err := http.Get(e.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d while NATS is down, want 503", ready.StatusCode)
	}
}

func TestProbesAndMetrics(t *testing.T) {
	e := newEnv(t, nil)
	do(t, e.signedRequest(t, []byte(validIncident)))
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/metrics" {
			for _, s := range []string{`blockwire_webhook_requests_total{outcome="accepted"} 1`, "blockwire_webhook_publish_seconds_bucket"} {
				if !strings.Contains(string(body), s) {
					t.Errorf("/metrics lacks %q", s)
				}
			}
		}
	}
}
