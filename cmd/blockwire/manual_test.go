package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

// apiCall is one request the fake API received.
type apiCall struct {
	method, target string
	header         http.Header
	body           []byte
}

// fakeAPI stands in for serve's HTTP API: it records each request and
// answers as serve would when it accepts it.
type fakeAPI struct {
	url   string
	mu    sync.Mutex
	calls []apiCall
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, apiCall{method: r.Method, target: r.URL.RequestURI(), header: r.Header.Clone(), body: body})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `{"blocks":[],"count":0,"truncated":false}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"id":"manual-1","seq":1,"duplicate":false,"key":"k"}`)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeAPI) received() []apiCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiCall(nil), f.calls...)
}

// isolateEnv clears every BLOCKWIRE_* variable for the test, then sets env.
func isolateEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix) {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// run runs the CLI in-process.
func run(t *testing.T, args ...string) error {
	t.Helper()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	return cmd.ExecuteContext(context.Background())
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestBlockSendsSecretsHashed: a secret given to `blockwire block` leaves
// the machine only as its SHA-256; other values are sent as given; a value
// the server could not check by its hash is refused here.
func TestBlockSendsSecretsHashed(t *testing.T) {
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"
	tests := []struct {
		name    string
		args    []string
		secret  string // sent only as its hash
		value   string // sent as given
		wantErr string
	}{
		{"header", []string{"header", "k-secret-123", "--name", "X-Api-Key"}, "k-secret-123", "", ""},
		{"cookie", []string{"cookie", "s-secret-456", "--name", "session"}, "s-secret-456", "", ""},
		{"query", []string{"query", "q-secret-789", "--name", "api_key"}, "q-secret-789", "", ""},
		{"whole token", []string{"jwt", token}, token, "", ""},
		{"token claim", []string{"jwt", "user-42", "--claim", "sub"}, "", "user-42", ""},
		{"address", []string{"ip", "192.0.2.1"}, "", "192.0.2.1", ""},
		{"whole token that is not a JWT", []string{"jwt", "not-a-jwt"}, "", "", "not_jwt"},
		{"header without a name", []string{"header", "k-secret-123"}, "", "", "without a name"},
		{"secret over the longest value", []string{"header", strings.Repeat("k", 8193), "--name", "X-Api-Key"}, "", "", "more than 8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t, nil)
			api := newFakeAPI(t)
			err := run(t, append(append([]string{"block"}, tt.args...), "--api-url", api.url, "--webhook-token", demoToken)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
				}
				if n := len(api.received()); n != 0 {
					t.Fatalf("%d requests sent, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			calls := api.received()
			if len(calls) != 1 {
				t.Fatalf("%d requests, want 1", len(calls))
			}
			var sent map[string]any
			if err := json.Unmarshal(calls[0].body, &sent); err != nil {
				t.Fatal(err)
			}
			if tt.secret != "" && (strings.Contains(string(calls[0].body), tt.secret) || sent["value"] != nil || sent["valueSha256"] != sha256Hex(tt.secret)) {
				t.Fatalf("sent %s, want only the secret's SHA-256", calls[0].body)
			}
			if tt.value != "" && (sent["value"] != tt.value || sent["valueSha256"] != nil) {
				t.Fatalf("sent %s, want the value %q", calls[0].body, tt.value)
			}
		})
	}
}

// TestPerInvocationFlagsIgnoreTheEnvironment: what a command acts on comes
// from its command line only; a stray BLOCKWIRE_SERVICE must not scope a
// block. Where to connect and the credentials still come from the
// environment.
func TestPerInvocationFlagsIgnoreTheEnvironment(t *testing.T) {
	stray := map[string]string{
		"BLOCKWIRE_SERVICE": "checkout", "BLOCKWIRE_ROUTE": "pay", "BLOCKWIRE_FOR": "30d",
		"BLOCKWIRE_REASON": "stray", "BLOCKWIRE_ACTOR": "mallory", "BLOCKWIRE_KEY": "ip.=.=.=.198_2E51_2E100_2E1",
		"BLOCKWIRE_NAME": "X-Stray", "BLOCKWIRE_CLAIM": "sub", "BLOCKWIRE_KIND": "mac", "BLOCKWIRE_LIMIT": "7",
		"BLOCKWIRE_JSON": "true", "USER": "alice",
	}
	tests := []struct {
		name   string
		args   []string
		method string
		target string
		body   string // the JSON body sent, "" for none
	}{
		{"block", []string{"block", "ip", "192.0.2.1"}, http.MethodPost, "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","actor":"alice"}`},
		{"unblock", []string{"unblock", "ip", "192.0.2.1"}, http.MethodDelete, "/v1/blocks/ip.=.=.=.192_2E0_2E2_2E1?actor=alice", ""},
		{"blocks", []string{"blocks"}, http.MethodGet, "/v1/blocks?limit=100", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			env := map[string]string{"BLOCKWIRE_API_URL": api.url, "BLOCKWIRE_WEBHOOK_TOKEN": demoToken}
			for k, v := range stray {
				env[k] = v
			}
			isolateEnv(t, env)
			if err := run(t, tt.args...); err != nil {
				t.Fatal(err)
			}
			calls := api.received()
			if len(calls) != 1 {
				t.Fatalf("%d requests to the API named by BLOCKWIRE_API_URL, want 1", len(calls))
			}
			c := calls[0]
			if c.method != tt.method || c.target != tt.target || strings.TrimSpace(string(c.body)) != tt.body {
				t.Fatalf("sent %s %s %s, want %s %s %s", c.method, c.target, c.body, tt.method, tt.target, tt.body)
			}
			if got := c.header.Get("Authorization"); got != "Bearer "+demoToken {
				t.Errorf("Authorization %q: BLOCKWIRE_WEBHOOK_TOKEN not read", got)
			}
		})
	}
	t.Run("replay", func(t *testing.T) {
		closed := "nats://127.0.0.1:1"
		isolateEnv(t, map[string]string{"BLOCKWIRE_KIND": "mac", "BLOCKWIRE_SINCE": "yesterday", "BLOCKWIRE_FORMAT": "xml", "BLOCKWIRE_NATS_URL": closed})
		// The filters are left alone and the NATS URL is read: the command gets as far as connecting.
		if err := run(t, "replay"); err == nil || !strings.Contains(err.Error(), "is blockwire serve running") {
			t.Fatalf("err %v, want a failure to connect to %s", err, closed)
		}
	})
}
