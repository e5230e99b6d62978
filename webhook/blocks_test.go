package webhook_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

func TestManualBlockLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	e.runConsumer(t)
	c := e.client(t)
	ctx := t.Context()
	secs := int64(7200)
	got, err := c.Block(ctx, webhook.BlockRequest{Kind: "ip", Value: "::ffff:203.0.113.9", DurationSeconds: &secs, Reason: "manual test", Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != "ip.=.=.=.203_2E0_2E113_2E9" || !strings.HasPrefix(got.ID, "manual-") {
		t.Fatalf("answer %+v: want the canonical key and a manual incident id", got)
	}
	var listed *webhook.BlockList
	eventually(t, func() error {
		listed, err = c.Blocks(ctx, "ip", 10)
		if err != nil {
			return err
		}
		if listed.Count != 1 {
			return fmt.Errorf("%d blocks listed", listed.Count)
		}
		return nil
	})
	b := listed.Blocks[0]
	if b.Key != got.Key || b.Source != schemas.SourceManual || b.Title != "manual test" || b.IncidentID != got.ID {
		t.Fatalf("listed %+v", b)
	}
	if left := time.Until(b.ExpiresAt); left < 7100*time.Second || left > 7201*time.Second {
		t.Errorf("time left %s, want about 2h", left)
	}
	if other, _ := c.Blocks(ctx, "header", 10); other.Count != 0 {
		t.Errorf("kind filter let through %+v", other.Blocks)
	}
	if _, err := c.Unblock(ctx, got.Key, "bob"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		listed, err = c.Blocks(ctx, "", 10)
		if err != nil || listed.Count != 0 {
			return fmt.Errorf("still listed: %v %v", listed, err)
		}
		return nil
	})
}

// TestManualHostileRequests: each bad manual request is refused with a
// problem document and stores nothing.
func TestManualHostileRequests(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, method, path, body string
		status                   int
		wantPath                 string
	}{
		{"unknown field", "POST", "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","nuke":true}`, 400, "/"},
		{"not JSON", "POST", "/v1/blocks", `kind=ip`, 400, "/"},
		{"unknown kind", "POST", "/v1/blocks", `{"kind":"mac","value":"aa"}`, 400, "/kind"},
		{"invalid address", "POST", "/v1/blocks", `{"kind":"ip","value":"999.1.1.1"}`, 400, "/value"},
		{"negative duration", "POST", "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","durationSeconds":-60}`, 400, "/durationSeconds"},
		{"block everything", "POST", "/v1/blocks", `{"kind":"cidr","value":"0.0.0.0/0"}`, 400, "/value"},
		{"header without name", "POST", "/v1/blocks", `{"kind":"header","value":"k"}`, 400, "/"},
		{"range too wide", "POST", "/v1/blocks", `{"kind":"cidr","value":"10.0.0.0/8"}`, 422, ""},
		{"loopback", "POST", "/v1/blocks", `{"kind":"ip","value":"::ffff:127.0.0.1"}`, 422, ""},
		{"duration over the cap", "POST", "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","durationSeconds":3456000}`, 422, ""},
		{"actor with a newline", "POST", "/v1/blocks", `{"kind":"ip","value":"192.0.2.1","actor":"a\nb"}`, 400, "/actor"},
		{"bad key", "DELETE", "/v1/blocks/not.a.key", "", 400, "key"},
		{"body not UTF-8", "POST", "/v1/blocks", "{\"kind\":\"consumer\",\"value\":\"acme\xff\"}", 400, "/"},
		{"key part not UTF-8", "DELETE", "/v1/blocks/consumer.=.=.=.acme_FF", "", 400, "key"},
		{"scope in a key not UTF-8", "DELETE", "/v1/blocks/consumer.shop_C3.=.=.acme", "", 400, "key"},
		{"key with an upper-case header name", "DELETE", "/v1/blocks/header.=.=.X-Api-Key." + strings.Repeat("ab", 32), "", 400, "key"},
		{"key with an IPv4-mapped address", "DELETE", "/v1/blocks/ip.=.=.=._3A_3Affff_3A192_2E0_2E2_2E1", "", 400, "key"},
		{"kind filter unknown", "GET", "/v1/blocks?kind=mac", "", 400, "kind"},
		{"limit zero", "GET", "/v1/blocks?limit=0", "", 400, "limit"},
		{"limit huge", "GET", "/v1/blocks?limit=100000000", "", 400, "limit"},
		{"wrong method", "PUT", "/v1/blocks", `{}`, 405, ""},
	}
	before := e.streamMsgs(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, e.apiRequest(t, tt.method, tt.path, []byte(tt.body)))
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
			if d, _ := r.body["detail"].(string); d == "" {
				t.Errorf("no detail: %v", r.body)
			}
			if tt.wantPath != "" && !hasViolation(r.body, tt.wantPath) {
				t.Errorf("no violation at %s: %v", tt.wantPath, r.body["violations"])
			}
			if n := e.streamMsgs(t); n != before {
				t.Fatalf("stream holds %d messages, want %d", n, before)
			}
		})
	}
	t.Run("unauthenticated", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/blocks", bytes.NewReader(nil))
		if r := do(t, req); r.status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", r.status)
		}
		var p *webhook.ProblemError
		noAuth, _ := webhook.NewClient(webhook.ClientConfig{URL: e.url})
		if _, err := noAuth.Blocks(t.Context(), "", 1); !errors.As(err, &p) || p.Status != 401 {
			t.Fatalf("client error %v, want a 401 problem", err)
		}
	})
}

func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAuditForSIEM(t *testing.T) {
	e := newEnv(t, func(c *webhook.Config) {
		r, err := replay.NewReader(c.Publisher.(jetstream.JetStream), broker.Names{})
		if err != nil {
			t.Fatal(err)
		}
		c.Audit = r
	})
	e.runConsumer(t)
	do(t, e.signedRequest(t, []byte(validIncident))) // accepted + 2 blocked records
	get := func(query string) (int, []map[string]any) {
		t.Helper()
		target := "/v1/audit"
		if query != "" {
			target += "?" + query
		}
		resp, err := http.DefaultClient.Do(e.apiRequest(t, http.MethodGet, target, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var lines []map[string]any
		dec := json.NewDecoder(resp.Body)
		for dec.More() {
			var l map[string]any
			if err := dec.Decode(&l); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l)
		}
		return resp.StatusCode, lines
	}
	var lines []map[string]any
	eventually(t, func() error {
		_, lines = get("")
		if len(lines) != 3 {
			return fmt.Errorf("%d records", len(lines))
		}
		return nil
	})
	if _, page := get("after_seq=1&limit=1"); len(page) != 1 || page[0]["seq"] != float64(2) {
		t.Fatalf("page after seq 1: %v", page)
	}
	if _, none := get("since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(none) != 0 {
		t.Fatalf("records from the future: %v", none)
	}
	for _, q := range []string{"since=yesterday", "after_seq=-1", "limit=0", "limit=1000001"} {
		if status, _ := get(q); status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, status)
		}
	}
}

// TestManualSecretsAreStoredHashed: a manual block of a secret sent by value
// is stored in the incident stream by its SHA-256 only, under the key the
// value gives; a token sent for one of its claims is stored as the claim's
// value; other values are stored as given.
func TestManualSecretsAreStoredHashed(t *testing.T) {
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"
	tests := []struct {
		name   string
		req    webhook.BlockRequest
		hashed bool
		stored string // the value stored instead of the value sent, if not hashed
	}{
		{"header", webhook.BlockRequest{Kind: "header", Name: "X-Api-Key", Value: "k-secret-123"}, true, ""},
		{"cookie", webhook.BlockRequest{Kind: "cookie", Name: "session", Value: "s-secret-456"}, true, ""},
		{"query", webhook.BlockRequest{Kind: "query", Name: "api_key", Value: "q-secret-789"}, true, ""},
		{"whole token", webhook.BlockRequest{Kind: "jwt", Value: token}, true, ""},
		{"token claim", webhook.BlockRequest{Kind: "jwt", Claim: "sub", Value: "user-42"}, false, ""},
		{"token claim given as the token", webhook.BlockRequest{Kind: "jwt", Claim: "sub", Value: token}, false, "user-42"},
		{"address", webhook.BlockRequest{Kind: "ip", Value: "192.0.2.55"}, false, ""},
	}
	e := newEnv(t, nil)
	e.runConsumer(t)
	c := e.client(t)
	ctx := t.Context()
	s, err := e.js.Stream(ctx, e.broker.Names().IncidentStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ent := schemas.Entity{Type: tt.req.Kind, Name: tt.req.Name, Claim: tt.req.Claim, Value: tt.req.Value}
			want, err := consumer.KeyFor(ent, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Block(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != want {
				t.Fatalf("key %s, want %s (the key of the value)", got.Key, want)
			}
			msg, err := s.GetMsg(ctx, got.Seq)
			if err != nil {
				t.Fatal(err)
			}
			inc, err := schemas.ParseIncident(msg.Data)
			if err != nil {
				t.Fatalf("stored incident: %v", err)
			}
			sum := sha256.Sum256([]byte(tt.req.Value))
			stored := inc.Entities[0]
			switch {
			case tt.hashed && (bytes.Contains(msg.Data, []byte(tt.req.Value)) || stored.Value != "" || stored.ValueSHA256 != hex.EncodeToString(sum[:])):
				t.Fatalf("stored %s, want the value's SHA-256 and not the value", msg.Data)
			case tt.stored != "" && (bytes.Contains(msg.Data, []byte(tt.req.Value)) || stored.Value != tt.stored):
				t.Fatalf("stored %s, want the value %q and not the token", msg.Data, tt.stored)
			case !tt.hashed && tt.stored == "" && stored.Value != tt.req.Value:
				t.Fatalf("stored %s, want the value as given", msg.Data)
			}
			eventually(t, func() error {
				list, err := c.Blocks(ctx, tt.req.Kind, 10)
				if err != nil {
					return err
				}
				for _, b := range list.Blocks {
					if b.Key == want {
						return nil
					}
				}
				return fmt.Errorf("block %s not listed: %+v", want, list.Blocks)
			})
		})
	}
}
