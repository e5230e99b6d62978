package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/schemas"
)

const (
	callIP       = "kong.client.get_forwarded_ip"
	callHeaders  = "kong.request.get_headers"
	callQuery    = "kong.request.get_raw_query"
	callConsumer = "kong.client.get_consumer"
	callService  = "kong.router.get_service"
	callRoute    = "kong.router.get_route"
	callVar      = "kong.nginx.get_var"
	callExit     = "kong.response.exit"
)

func incident(id string, typ schemas.IncidentType, seconds int64, scope *schemas.Scope, entities ...schemas.Entity) schemas.Incident {
	inc := schemas.Incident{ID: id, Type: typ, Entities: entities, Scope: scope, Title: "e2e"}
	if seconds > 0 {
		inc.DurationSeconds = &seconds
	}
	return inc
}

func ipEntity(v string) schemas.Entity { return schemas.Entity{Type: schemas.EntityIP, Value: v} }

// blockedBody checks the default answer to a blocked request.
func blockedBody(t *testing.T, res *kongdriver.Result, wantID string) {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal(res.Body, &body); err != nil {
		t.Fatalf("body %q: %v", res.Body, err)
	}
	if body["reason"] != "blocked" || body["message"] != "Forbidden" || body["request_id"] == "" ||
		(wantID != "" && body["request_id"] != wantID) {
		t.Errorf("body %v, want reason blocked and request id %q", body, wantID)
	}
	if ct := res.Headers["content-type"]; len(ct) != 1 || !strings.HasPrefix(ct[0], "application/json") {
		t.Errorf("content-type %v", ct)
	}
}

// Incident to the webhook → consumer → KV → the plugin refuses the address; another
// address passes; unblock and expiry lift the block.
func TestEndToEndIPBlock(t *testing.T) {
	s := newStack(t, true, consumer.Guardrails{})
	p := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), filepath.Join(t.TempDir(), "snap"))...)
	inst := p.instance(t, nil) // as `curl -X POST :8001/plugins -d name=noname-prevention`
	attacker := kongdriver.Request{ClientIP: "203.0.113.7", Path: "/login",
		Vars: map[string]string{"kong_request_id": "4f2d0c1e9a"}}
	bystander := kongdriver.Request{ClientIP: "203.0.113.8", Path: "/login"}

	s.post(t, incident("inc-1", schemas.TypeBlock, 3600, nil, ipEntity("203.0.113.7")))
	res := waitFor(t, inst, attacker, 403)
	blockedBody(t, res, "4f2d0c1e9a")
	if want := []string{callIP, callVar, callExit}; !slices.Equal(res.Calls, want) {
		t.Errorf("blocked request calls %v, want %v", res.Calls, want)
	}
	res = access(t, inst, bystander)
	if !res.Allowed || !slices.Equal(res.Calls, []string{callIP}) {
		t.Errorf("bystander: %+v, want allowed after exactly one PDK call", res)
	}

	s.post(t, incident("inc-1-lifted", schemas.TypeUnblock, 0, nil, ipEntity("203.0.113.7")))
	waitFor(t, inst, attacker, 0)

	// A short block: enforced, then lifted at its expiresAt by the plugin's own clock.
	s.post(t, incident("inc-2", schemas.TypeBlock, 3, nil, ipEntity("203.0.113.7")))
	var expires time.Time
	eventuallyKV(t, func() bool {
		e, err := s.kv.Get(context.Background(), "ip.=.=.=.203_2E0_2E113_2E7")
		if err != nil {
			return false
		}
		var b schemas.Block
		return json.Unmarshal(e.Value(), &b) == nil && func() bool { expires = b.ExpiresAt; return true }()
	})
	sawBlocked := false
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := access(t, inst, attacker)
		if res.Status == 403 {
			sawBlocked = true
		} else if res.Allowed && time.Now().After(expires) {
			break
		} else if res.Allowed && sawBlocked {
			t.Fatalf("allowed again before the block's expiresAt %s", expires)
		}
		if time.Now().After(deadline) {
			t.Fatal("the short block never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawBlocked {
		t.Log("the machine was too slow to see the 3-second block before it expired")
	}
}

func jwtWith(t testing.TB, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims)) + ".c2lnbmF0dXJl"
}

func TestEndToEndEveryKind(t *testing.T) {
	s := newStack(t, true, consumer.Guardrails{})
	p := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), filepath.Join(t.TempDir(), "snap"))...)
	inst := p.instance(t, map[string]any{})
	evil := jwtWith(t, `{"sub":"mallory","iat":1700000000}`)
	sameSub := jwtWith(t, `{"sub":"mallory","iat":1800000000}`)
	fine := jwtWith(t, `{"sub":"alice"}`)
	neutral := func(r kongdriver.Request) kongdriver.Request {
		if r.ClientIP == "" {
			r.ClientIP = "198.18.0.1"
		}
		return r
	}
	tests := []struct {
		name         string
		entity       schemas.Entity
		scope        *schemas.Scope
		match, other kongdriver.Request
	}{
		{"ip v6", ipEntity("2001:db8::7"), nil,
			kongdriver.Request{ClientIP: "2001:db8::7"}, kongdriver.Request{ClientIP: "2001:db8::8"}},
		{"ip v4-mapped in the incident", ipEntity("::ffff:198.51.100.9"), nil,
			kongdriver.Request{ClientIP: "198.51.100.9"}, kongdriver.Request{ClientIP: "198.51.100.10"}},
		{"ip behind a trusted proxy", ipEntity("198.51.100.20"), nil,
			kongdriver.Request{ClientIP: "10.0.0.1", ForwardedIP: "198.51.100.20"}, kongdriver.Request{ClientIP: "198.51.100.20", ForwardedIP: "198.51.100.21"}},
		{"cidr", schemas.Entity{Type: "cidr", Value: "192.0.2.0/24"}, nil,
			kongdriver.Request{ClientIP: "192.0.2.77"}, kongdriver.Request{ClientIP: "192.0.3.1"}},
		{"header", schemas.Entity{Type: "header", Name: "X-Api-Key", Value: "stolen-key"}, nil,
			kongdriver.Request{Headers: map[string][]string{"X-API-KEY": {"stolen-key"}}},
			kongdriver.Request{Headers: map[string][]string{"X-Api-Key": {"other-key"}}}},
		{"cookie", schemas.Entity{Type: "cookie", Name: "session_id", Value: "sess-1"}, nil,
			kongdriver.Request{Headers: map[string][]string{"Cookie": {"theme=dark; session_id=sess-1"}}},
			kongdriver.Request{Headers: map[string][]string{"Cookie": {"session_id=sess-2"}}}},
		{"query", schemas.Entity{Type: "query", Name: "token", Value: "q secret"}, nil,
			kongdriver.Request{RawQuery: "page=2&token=q+secret"}, kongdriver.Request{RawQuery: "token=q-secret"}},
		{"jwt claim", schemas.Entity{Type: "jwt", Claim: "sub", Value: evil}, nil,
			kongdriver.Request{Headers: map[string][]string{"Authorization": {"Bearer " + sameSub}}},
			kongdriver.Request{Headers: map[string][]string{"Authorization": {"Bearer " + fine}}}},
		{"jwt whole token", schemas.Entity{Type: "jwt", Value: fine}, nil,
			kongdriver.Request{Headers: map[string][]string{"Authorization": {"Bearer " + fine}}},
			kongdriver.Request{Headers: map[string][]string{"Authorization": {"Bearer " + jwtWith(t, `{"sub":"bob"}`)}}}},
		{"consumer", schemas.Entity{Type: "consumer", Value: "mallory"}, nil,
			kongdriver.Request{Consumer: &kongdriver.Consumer{ID: "c-9", Username: "mallory"}},
			kongdriver.Request{Consumer: &kongdriver.Consumer{ID: "c-1", Username: "alice"}}},
		{"scoped to a service", ipEntity("203.0.113.50"), &schemas.Scope{Service: "orders"},
			kongdriver.Request{ClientIP: "203.0.113.50", Service: &kongdriver.Service{ID: "s-1", Name: "orders"}},
			kongdriver.Request{ClientIP: "203.0.113.50", Service: &kongdriver.Service{ID: "s-2", Name: "users"}}},
		{"scoped to a route", schemas.Entity{Type: "header", Name: "x-device", Value: "bot-7"}, &schemas.Scope{Route: "r-login"},
			kongdriver.Request{Headers: map[string][]string{"x-device": {"bot-7"}}, Route: &kongdriver.Route{ID: "r-login", Name: "login"}},
			kongdriver.Request{Headers: map[string][]string{"x-device": {"bot-7"}}, Route: &kongdriver.Route{ID: "r-home", Name: "home"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.post(t, incident(fmt.Sprintf("kind-%d", i), schemas.TypeBlock, 3600, tt.scope, tt.entity))
			blockedBody(t, waitFor(t, inst, neutral(tt.match), 403), "")
			if res := access(t, inst, neutral(tt.other)); !res.Allowed {
				t.Errorf("the other request was refused: %d %s", res.Status, res.Body)
			}
		})
	}
}

// The PDK calls an allowed request costs, for each mix of active block kinds.
func TestCallsPerRequest(t *testing.T) {
	s := newStack(t, false, consumer.Guardrails{})
	p := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), "off")...)
	inst := p.instance(t, nil)
	hour := time.Now().Add(time.Hour)
	parts := map[string]schemas.KeyParts{
		"ip":       {Kind: "ip", Value: "203.0.113.7"},
		"cidr":     {Kind: "cidr", Value: "192.0.2.0/24"},
		"header":   {Kind: "header", Name: "x-api-key", Value: strings.Repeat("a", 64)},
		"cookie":   {Kind: "cookie", Name: "sid", Value: strings.Repeat("b", 64)},
		"jwt":      {Kind: "jwt", Name: "sub", Value: "mallory"},
		"query":    {Kind: "query", Name: "token", Value: strings.Repeat("c", 64)},
		"consumer": {Kind: "consumer", Value: "mallory"},
		"scoped":   {Kind: "ip", Service: "orders", Value: "198.18.0.1"},
	}
	req := kongdriver.Request{ClientIP: "198.18.0.1", Headers: map[string][]string{"x-api-key": {"k"}}, RawQuery: "a=1",
		Service: &kongdriver.Service{ID: "s-2", Name: "users"}}
	tests := []struct {
		kinds []string
		calls []string
	}{
		{nil, nil},
		{[]string{"ip"}, []string{callIP}},
		{[]string{"cidr"}, []string{callIP}},
		{[]string{"ip", "cidr"}, []string{callIP}},
		{[]string{"header"}, []string{callHeaders}},
		{[]string{"cookie"}, []string{callHeaders}},
		{[]string{"jwt"}, []string{callHeaders}},
		{[]string{"header", "cookie", "jwt"}, []string{callHeaders}},
		{[]string{"query"}, []string{callQuery}},
		{[]string{"consumer"}, []string{callConsumer}},
		{[]string{"ip", "header"}, []string{callIP, callHeaders}},
		{[]string{"ip", "cidr", "header", "cookie", "jwt", "query", "consumer"}, []string{callIP, callHeaders, callQuery, callConsumer}},
		// A scoped block whose value matches this request needs the router to decide.
		{[]string{"ip", "cidr", "header", "cookie", "jwt", "query", "consumer", "scoped"},
			[]string{callIP, callHeaders, callQuery, callConsumer, callService}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"none"}, tt.kinds...)[min(1, len(tt.kinds)):], "+"), func(t *testing.T) {
			var keys []string
			for _, k := range tt.kinds {
				keys = append(keys, s.put(t, parts[k], hour))
			}
			t.Cleanup(func() {
				for _, k := range keys {
					_ = s.kv.Purge(context.Background(), k)
				}
				// The next case must not pass on this one's blocks: wait until they are gone.
				deadline := time.Now().Add(30 * time.Second)
				for {
					res := access(t, inst, req)
					if len(res.Calls) == 0 {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("calls %v after the blocks were purged, want none", res.Calls)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
			deadline := time.Now().Add(30 * time.Second)
			for {
				res := access(t, inst, req)
				if !res.Allowed {
					t.Fatalf("refused: %d %s", res.Status, res.Body)
				}
				if slices.Equal(res.Calls, tt.calls) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("calls %v, want %v", res.Calls, tt.calls)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestFailModeBeforeFirstSync(t *testing.T) {
	p := startPlugin(t, "plugin", pluginEnv(deadURL(t), "off")...)
	req := kongdriver.Request{ClientIP: "203.0.113.7"}
	res := access(t, p.instance(t, nil), req)
	if !res.Allowed || len(res.Calls) != 0 {
		t.Errorf("fail open (the default): %+v, want allowed without a PDK call", res)
	}
	res = access(t, p.instance(t, map[string]any{"fail_mode": "closed"}), req)
	var body map[string]string
	_ = json.Unmarshal(res.Body, &body)
	if res.Status != 503 || body["reason"] != "not_synced" || res.Headers["retry-after"] == nil {
		t.Errorf("fail closed: %d %s %v, want 503 not_synced with Retry-After", res.Status, res.Body, res.Headers)
	}
}

// A Kong node restarting while NATS is down enforces its snapshot.
func TestSnapshotAcrossRestart(t *testing.T) {
	s := newStack(t, false, consumer.Guardrails{})
	snap := filepath.Join(t.TempDir(), "snap")
	s.put(t, schemas.KeyParts{Kind: "ip", Value: "203.0.113.7"}, time.Now().Add(time.Hour))
	attacker := kongdriver.Request{ClientIP: "203.0.113.7"}

	p1 := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), snap)...)
	waitFor(t, p1.instance(t, nil), attacker, 403)
	if err := p1.d.Close(); err != nil { // SIGTERM: the plugin writes its last snapshot
		t.Fatal(err)
	}
	if !strings.Contains(p1.log.String(), "snapshot written") {
		t.Fatalf("no snapshot written at shutdown:\n%s", p1.log.String())
	}

	p2 := startPlugin(t, "plugin", pluginEnv(deadURL(t), snap, "BLOCKWIRE_FAIL_MODE=closed")...)
	inst := p2.instance(t, nil)
	waitFor(t, inst, attacker, 403)
	if res := access(t, inst, kongdriver.Request{ClientIP: "203.0.113.8"}); !res.Allowed {
		t.Errorf("another address refused from the snapshot: %d %s", res.Status, res.Body)
	}
}

// A panic in the handler is answered per the fail mode and the process lives on.
func TestPanicIsRecovered(t *testing.T) {
	s := newStack(t, false, consumer.Guardrails{})
	s.put(t, schemas.KeyParts{Kind: "ip", Value: "203.0.113.7"}, time.Now().Add(time.Hour))
	p := startPlugin(t, "hooks", pluginEnv(s.nats.URL(), "off")...)
	open, closed := p.instance(t, nil), p.instance(t, map[string]any{"fail_mode": "closed"})
	waitFor(t, open, kongdriver.Request{ClientIP: "203.0.113.7"}, 403)
	pid := p.d.Pid()
	panicky := kongdriver.Request{ClientIP: "192.0.2.250"} // enforcer.TestPanicIP in the hooks build
	if res := access(t, open, panicky); !res.Allowed {
		t.Errorf("fail open after a panic: %d %s, want allowed", res.Status, res.Body)
	}
	res := access(t, closed, panicky)
	var body map[string]string
	_ = json.Unmarshal(res.Body, &body)
	if res.Status != 500 || body["reason"] != "internal_error" {
		t.Errorf("fail closed after a panic: %d %s, want 500 internal_error", res.Status, res.Body)
	}
	if res := access(t, open, kongdriver.Request{ClientIP: "203.0.113.7"}); res.Status != 403 || res.Retried || p.d.Pid() != pid {
		t.Errorf("after the panics: %+v (pid %d → %d), want the same process still blocking", res, pid, p.d.Pid())
	}
	if !logSays(p, "handler panicked") {
		t.Error("the panic was not logged")
	}
}

// A config that makes no sense refuses that instance, says why in the log, and leaves the
// process and the other instances alone.
func TestInvalidConfig(t *testing.T) {
	s := newStack(t, false, consumer.Guardrails{})
	s.put(t, schemas.KeyParts{Kind: "ip", Value: "203.0.113.7"}, time.Now().Add(time.Hour))
	p := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), "off")...)
	good := p.instance(t, nil)
	attacker := kongdriver.Request{ClientIP: "203.0.113.7"}
	waitFor(t, good, attacker, 403)
	for _, tt := range []struct {
		config map[string]any
		status int
		log    string
	}{
		{map[string]any{"status_code": 99, "fail_mode": "closed"}, 500, "config.status_code 99"},
		{map[string]any{"fail_mode": "sometimes"}, 500, `config.fail_mode \"sometimes\"`},
		{map[string]any{"status_code": 99}, 0, "config.status_code 99"}, // answered per the default fail mode: open
	} {
		res := access(t, p.instance(t, tt.config), attacker)
		if res.Status != tt.status || res.Allowed != (tt.status == 0) {
			t.Errorf("%v: %d %s, want %d", tt.config, res.Status, res.Body, tt.status)
		}
		if !logSays(p, tt.log) {
			t.Errorf("%v: the log does not say %q", tt.config, tt.log)
		}
	}
	if !logSays(p, "plugin instance refused: invalid config") {
		t.Error("no refusal in the log")
	}
	if res := access(t, good, attacker); res.Status != 403 || res.Retried {
		t.Errorf("the valid instance after the refusals: %+v", res)
	}
}

// An attacker cannot hide a blocked header behind a thousand others.
func TestHeaderHiddenPastTheLimit(t *testing.T) {
	s := newStack(t, false, consumer.Guardrails{})
	s.put(t, schemas.KeyParts{Kind: "header", Name: "x-api-key", Value: sha256Hex("stolen")}, time.Now().Add(time.Hour))
	p := startPlugin(t, "plugin", pluginEnv(s.nats.URL(), "off")...)
	inst := p.instance(t, nil)
	waitFor(t, inst, kongdriver.Request{Headers: map[string][]string{"x-api-key": {"stolen"}}}, 403)
	h := map[string][]string{"x-api-key": {"stolen"}}
	for i := range 1000 {
		h[fmt.Sprintf("a-%04d", i)] = []string{"x"} // sorted first by the driver: the key is line 1001
	}
	res := access(t, inst, kongdriver.Request{Headers: h})
	var body map[string]string
	_ = json.Unmarshal(res.Body, &body)
	if res.Status != 403 || body["reason"] != "too_many_headers" {
		t.Errorf("hidden header: %d %s, want 403 too_many_headers", res.Status, res.Body)
	}
}

func TestDump(t *testing.T) {
	info, err := kongdriver.Dump(testContext(t), pluginBinary(t, "plugin"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "noname-prevention" || !slices.Equal(info.Phases, []string{"access"}) || info.Priority != DefaultPriority {
		t.Errorf("dump %+v", info)
	}
	for _, f := range []string{"nats_url", "nats_credentials", "bucket", "status_code", "response_body", "fail_mode"} {
		if !strings.Contains(string(info.Schema), `"`+f+`"`) {
			t.Errorf("schema lacks %s: %s", f, info.Schema)
		}
	}
}

func eventuallyKV(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("the block never reached the bucket")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
