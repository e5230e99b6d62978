package webhook_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/webhook"
)

const validIncident = `{"id":"inc-1","type":"block","title":"Credential stuffing","severity":"high",
"entities":[{"type":"ip","value":"203.0.113.7"},{"type":"header","name":"X-Api-Key","value":"k-123"}],
"durationSeconds":3600}`

func withEntities(n int) string {
	var b strings.Builder
	b.WriteString(`{"id":"inc-many","entities":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"ip","value":"10.%d.%d.%d"}`, i>>16&255, i>>8&255, i&255)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestHostileRequests: every broken or hostile request gets the right status
// and a problem document, and the stream stores nothing.
func TestHostileRequests(t *testing.T) {
	e := newEnv(t, nil)
	type tc struct {
		name     string
		body     string
		modify   func(*http.Request) // applied after signing
		status   int
		problem  string // suffix of the problem type
		wantPath string // a violation path that must be reported ("" = none checked)
	}
	setHeader := func(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }
	tests := []tc{
		{name: "no auth", body: validIncident, modify: func(r *http.Request) {
			r.Header.Del("Authorization")
			r.Header.Del(webhook.HeaderSignature)
			r.Header.Del(webhook.HeaderTimestamp)
		}, status: 401, problem: "unauthorized"},
		{name: "no bearer token", body: validIncident, modify: func(r *http.Request) { r.Header.Del("Authorization") }, status: 401, problem: "unauthorized"},
		{name: "wrong token", body: validIncident, modify: setHeader("Authorization", "Bearer not-the-token-0123456789"), status: 401, problem: "unauthorized"},
		{name: "basic auth instead of bearer", body: validIncident, modify: setHeader("Authorization", "Basic "+testToken), status: 401, problem: "unauthorized"},
		{name: "bad signature", body: validIncident, modify: setHeader(webhook.HeaderSignature, "sha256="+strings.Repeat("ab", 32)), status: 401, problem: "unauthorized"},
		{name: "signature not hex", body: validIncident, modify: setHeader(webhook.HeaderSignature, "sha256=zz"), status: 401, problem: "unauthorized"},
		{name: "missing signature", body: validIncident, modify: func(r *http.Request) { r.Header.Del(webhook.HeaderSignature) }, status: 401, problem: "unauthorized"},
		{name: "stale timestamp", body: validIncident, modify: resign(-6 * time.Minute), status: 401, problem: "unauthorized"},
		{name: "future timestamp", body: validIncident, modify: resign(6 * time.Minute), status: 401, problem: "unauthorized"},
		{name: "timestamp not a number", body: validIncident, modify: setHeader(webhook.HeaderTimestamp, "yesterday"), status: 401, problem: "unauthorized"},
		{name: "body changed after signing", body: validIncident, modify: func(r *http.Request) {
			b := []byte(strings.Replace(validIncident, "203.0.113.7", "203.0.113.8", 1))
			r.Body, r.ContentLength = nopCloser(b), int64(len(b))
		}, status: 401, problem: "unauthorized"},
		{name: "wrong content type", body: validIncident, modify: setHeader("Content-Type", "text/plain"), status: 415, problem: "unsupported-media-type"},
		{name: "form content type", body: validIncident, modify: setHeader("Content-Type", "application/x-www-form-urlencoded"), status: 415, problem: "unsupported-media-type"},
		{name: "no content type", body: validIncident, modify: func(r *http.Request) { r.Header.Del("Content-Type") }, status: 415, problem: "unsupported-media-type"},
		{name: "empty body", body: "", status: 400, problem: "invalid-incident", wantPath: "/"},
		{name: "invalid JSON", body: `{"id":"inc-1",`, status: 400, problem: "invalid-incident", wantPath: "/"},
		{name: "top-level array", body: `[` + validIncident + `]`, status: 400, problem: "invalid-incident", wantPath: "/"},
		{name: "2 MiB body", body: `{"id":"big","title":"` + strings.Repeat("a", 2<<20) + `"}`, status: 413, problem: "too-large"},
		{name: "unknown entity type", body: `{"id":"i","entities":[{"type":"mac","value":"aa:bb"}]}`, status: 400, problem: "invalid-incident", wantPath: "/entities/0/type"},
		{name: "invalid IP", body: `{"id":"i","entities":[{"type":"ip","value":"300.1.1.1"}]}`, status: 400, problem: "invalid-incident", wantPath: "/entities/0/value"},
		{name: "header entity without name", body: `{"id":"i","entities":[{"type":"header","value":"x"}]}`, status: 400, problem: "invalid-incident", wantPath: "/entities/0"},
		{name: "negative duration", body: `{"id":"i","durationSeconds":-5,"entities":[{"type":"ip","value":"192.0.2.1"}]}`, status: 400, problem: "invalid-incident", wantPath: "/durationSeconds"},
		{name: "1001 entities", body: withEntities(1001), status: 400, problem: "invalid-incident", wantPath: "/entities"},
		{name: "id of 200 characters", body: `{"id":"` + strings.Repeat("x", 200) + `","entities":[{"type":"ip","value":"192.0.2.1"}]}`, status: 400, problem: "invalid-incident", wantPath: "/id"},
		{name: "JSON bomb of deep nesting", body: `{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"x":` + strings.Repeat("[", 200000) + strings.Repeat("]", 200000) + `}`, status: 400, problem: "invalid-incident", wantPath: "/"},
		{name: "missing id", body: `{"entities":[{"type":"ip","value":"192.0.2.1"}]}`, status: 400, problem: "invalid-incident", wantPath: "/"},
		{name: "no entities", body: `{"id":"i","entities":[]}`, status: 400, problem: "invalid-incident", wantPath: "/entities"},
		{name: "unknown incident type", body: `{"id":"i","type":"nuke","entities":[{"type":"ip","value":"192.0.2.1"}]}`, status: 400, problem: "invalid-incident", wantPath: "/type"},
		{name: "block everything", body: `{"id":"i","entities":[{"type":"cidr","value":"0.0.0.0/0"}]}`, status: 400, problem: "invalid-incident", wantPath: "/entities/0/value"},
		{name: "block everything v6", body: `{"id":"i","entities":[{"type":"cidr","value":"::/0"}]}`, status: 400, problem: "invalid-incident", wantPath: "/entities/0/value"},
	}
	before := e.streamMsgs(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := e.signedRequest(t, []byte(tt.body))
			if tt.modify != nil {
				tt.modify(req)
			}
			r := do(t, req)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %v", r.status, tt.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			if typ, _ := r.body["type"].(string); !strings.HasSuffix(typ, "/"+tt.problem) {
				t.Errorf("problem type %q, want …/%s", typ, tt.problem)
			}
			if d, _ := r.body["detail"].(string); d == "" {
				t.Errorf("problem has no detail: %v", r.body)
			}
			if tt.wantPath != "" && !hasViolation(r.body, tt.wantPath) {
				t.Errorf("no violation at %s: %v", tt.wantPath, r.body["violations"])
			}
			if got := e.streamMsgs(t); got != before {
				t.Errorf("stream holds %d messages, want %d: a refused request stored something", got, before)
			}
		})
	}
}

func hasViolation(body map[string]any, path string) bool {
	vs, _ := body["violations"].([]any)
	for _, v := range vs {
		m, _ := v.(map[string]any)
		p, _ := m["path"].(string)
		// "/" is the document itself and a prefix of every path: it must match exactly.
		match := p == path || path != "/" && strings.HasPrefix(p, path)
		if msg, _ := m["message"].(string); match && msg != "" {
			return true
		}
	}
	return false
}

// resign re-signs the request with a timestamp shifted by d.
func resign(d time.Duration) func(*http.Request) {
	return func(r *http.Request) {
		body := []byte(validIncident)
		ts := strconv.FormatInt(time.Now().Add(d).Unix(), 10)
		r.Header.Set(webhook.HeaderTimestamp, ts)
		r.Header.Set(webhook.HeaderSignature, fmt.Sprintf("sha256=%x", webhook.Sign([]byte(testSecret), ts, body)))
	}
}

func nopCloser(b []byte) *readCloser { return &readCloser{bytes.NewReader(b)} }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
