package webhook_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
)

// hostileBodies generates bodies the contract must refuse: every field of a
// valid incident replaced by each value that is wrong for it, the body cut
// short at every few bytes, invalid UTF-8, trailing data, and nesting bombs.
func hostileBodies() map[string]string {
	base := map[string]any{
		"id": "inc-h", "type": "block", "title": "t", "severity": "high", "durationSeconds": 600,
		"detectionTime": "2026-11-25T10:00:00Z", "api": map[string]any{"host": "h", "path": "/p", "method": "GET"},
		"scope":    map[string]any{"service": "s"},
		"entities": []any{map[string]any{"type": "ip", "value": "203.0.113.7"}},
	}
	entity := func(m map[string]any) []any { return []any{m} }
	long := strings.Repeat("x", 9000)
	bad := map[string][]any{
		"id":              {nil, 123, "", strings.Repeat("i", 129), "ctl\u0000id", []any{"x"}, map[string]any{}},
		"type":            {nil, 1, "", "nuke", "BLOCK", []any{"block"}},
		"severity":        {"urgent", 5, "", "HIGH"},
		"durationSeconds": {-1, 0, "600", 1.5, 1e300, true, 31536001},
		"detectionTime":   {"yesterday", 5, "2026-13-01T00:00:00Z", "2026-11-25 10:00:00"},
		"scope":           {"s", 5, map[string]any{}, map[string]any{"service": ""}, map[string]any{"service": 5}, map[string]any{"nope": "x"}},
		"api":             {"x", 5, []any{}},
		"title":           {5, strings.Repeat("t", 513)},
		"entities": {nil, "x", 5, map[string]any{}, []any{}, []any{1}, []any{nil}, []any{"ip"},
			entity(map[string]any{"type": "mac", "value": "aa:bb"}),
			entity(map[string]any{"type": "ip"}),
			entity(map[string]any{"value": "203.0.113.7"}),
			entity(map[string]any{"type": "ip", "value": ""}),
			entity(map[string]any{"type": "ip", "value": "999.1.1.1"}),
			entity(map[string]any{"type": "ip", "value": "fe80::1%eth0"}),
			entity(map[string]any{"type": "ip", "value": "10.0.0.0/8"}),
			entity(map[string]any{"type": "ip", "value": 5}),
			entity(map[string]any{"type": "ip", "value": long}),
			entity(map[string]any{"type": "cidr", "value": "10.0.0.0"}),
			entity(map[string]any{"type": "cidr", "value": "0.0.0.0/0"}),
			entity(map[string]any{"type": "cidr", "value": "::/0"}),
			entity(map[string]any{"type": "cidr", "value": "10.0.0.0/33"}),
			entity(map[string]any{"type": "header", "value": "v"}),
			entity(map[string]any{"type": "header", "name": "X Api", "value": "v"}),
			entity(map[string]any{"type": "header", "name": "", "value": "v"}),
			entity(map[string]any{"type": "header", "name": "x", "value": "v", "claim": "sub"}),
			entity(map[string]any{"type": "cookie", "name": "a=b", "value": "v"}),
			entity(map[string]any{"type": "query", "name": "q\u0001", "value": "v"}),
			entity(map[string]any{"type": "jwt", "value": "not-a-jwt"}),
			entity(map[string]any{"type": "jwt", "claim": "", "value": "v"}),
			entity(map[string]any{"type": "ip", "name": "x", "value": "203.0.113.7"}),
			entity(map[string]any{"type": "ip", "value": "203.0.113.7", "extra": true}),
			entity(map[string]any{"type": "header", "name": "x", "valueSha256": "nothex"}),
			entity(map[string]any{"type": "ip", "valueSha256": strings.Repeat("a", 64)}),
		},
	}
	out := map[string]string{}
	for field, values := range bad {
		for i, v := range values {
			doc := maps.Clone(base)
			doc[field] = v
			b, err := json.Marshal(doc)
			if err != nil {
				panic(err)
			}
			out[fmt.Sprintf("%s=%d", field, i)] = string(b)
		}
	}
	for _, field := range []string{"id", "entities"} {
		doc := maps.Clone(base)
		delete(doc, field)
		b, _ := json.Marshal(doc)
		out["without "+field] = string(b)
	}
	valid, _ := json.Marshal(base)
	for cut := 1; cut < len(valid); cut += 7 {
		out[fmt.Sprintf("cut at %d", cut)] = string(valid[:cut])
	}
	out["invalid UTF-8"] = strings.Replace(string(valid), "inc-h", "inc-\xff\xfe", 1)
	out["trailing data"] = string(valid) + `{"id":"second"}`
	out["two documents"] = string(valid) + "\n" + string(valid)
	out["nesting bomb in an unknown field"] = strings.TrimSuffix(string(valid), "}") + `,"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "}"
	out["huge exponent"] = strings.Replace(string(valid), `"durationSeconds":600`, `"durationSeconds":1e999999`, 1)
	out["type given twice"] = strings.TrimSuffix(string(valid), "}") + `,"type":"unblock"}`
	out["type given twice, escaped"] = strings.TrimSuffix(string(valid), "}") + `,"\u0074ype":"unblock"}`
	out["entity value given twice"] = strings.Replace(string(valid), `"value":"203.0.113.7"`, `"value":"203.0.113.7","value":"198.51.100.1"`, 1)
	out["null"], out["number"], out["string"], out["array of incidents"] = "null", "42", `"incident"`, "["+string(valid)+"]"
	return out
}

// TestHostileBodiesAreRefused: 100+ generated hostile bodies each get a 4xx
// and the stream stores nothing.
func TestHostileBodiesAreRefused(t *testing.T) {
	e := newEnv(t, nil)
	bodies := hostileBodies()
	if len(bodies) < 100 {
		t.Fatalf("only %d hostile bodies generated", len(bodies))
	}
	t.Logf("%d hostile bodies generated", len(bodies))
	before := e.streamMsgs(t)
	for name, body := range bodies {
		r := do(t, e.signedRequest(t, []byte(body)))
		if r.status < 400 || r.status > 499 {
			t.Errorf("%s: status %d, want 4xx; body %.120q", name, r.status, body)
		}
	}
	if n := e.streamMsgs(t); n != before {
		t.Fatalf("stream holds %d messages after %d hostile bodies, want %d", n, len(bodies), before)
	}
}
