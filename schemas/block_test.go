package schemas

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// blockJSON builds a block document around the given fields.
func blockJSON(fields string) []byte {
	return []byte(`{"createdAt":"2024-05-01T12:00:00Z","expiresAt":"2024-05-01T13:00:00Z","source":"webhook",` + fields + `}`)
}

func TestValidateBlock(t *testing.T) {
	b, err := ValidateBlock(blockJSON(`"kind":"ip","value":"203.0.113.7","incidentId":"i-1","incidentIds":["i-1","i-2"],
		"title":"t","severity":"high","scope":{"service":"s"},"future":true`))
	if err != nil {
		t.Fatal(err)
	}
	if b.Kind != EntityIP || b.Value != "203.0.113.7" || b.Source != SourceWebhook || len(b.IncidentIDs) != 2 ||
		b.Scope == nil || b.Scope.Service != "s" || !b.ExpiresAt.Equal(time.Date(2024, 5, 1, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("decoded %+v", b)
	}
	for _, ok := range []string{
		`"kind":"header","name":"X-Api-Key","valueSha256":"` + sha + `"`,
		`"kind":"jwt","valueSha256":"` + sha + `"`,
		`"kind":"jwt","name":"sub","value":"user-1"`,
		`"kind":"cidr","value":"2001:db8::/32"`,
		`"kind":"consumer","value":"acme"`,
	} {
		if _, err := ValidateBlock(blockJSON(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestValidateBlockRefuses(t *testing.T) {
	tests := []struct {
		name   string
		fields string
		want   []Violation
	}{
		{"both values", `"kind":"consumer","value":"a","valueSha256":"` + sha + `"`,
			[]Violation{{"/", `exactly one of "value" and "valueSha256" must be set`}}},
		{"no value", `"kind":"consumer"`,
			[]Violation{{"/", `exactly one of "value" and "valueSha256" must be set`}, {"/", `ip, cidr and consumer blocks store the plain "value"`}}},
		{"raw secret", `"kind":"header","name":"X-K","value":"secret"`,
			[]Violation{{"/", `header, cookie and query blocks need "name" and "valueSha256"`}}},
		{"raw token", `"kind":"jwt","value":"a.b.c"`,
			[]Violation{{"/", `a jwt block without a claim name stores the token only as "valueSha256"`}}},
		{"uppercase sha", `"kind":"jwt","valueSha256":"` + strings.ToUpper(sha) + `"`,
			[]Violation{{"/valueSha256", "must be 64 lowercase hex digits (a SHA-256)"}}},
		{"name on ip", `"kind":"ip","name":"x","value":"192.0.2.1"`,
			[]Violation{{"/name", "only header, cookie, query and jwt blocks have a name"}}},
		{"bad ip", `"kind":"ip","value":"192.0.2"`,
			[]Violation{{"/value", "not a valid IP address: IPv4 address too short"}}},
		{"mapped ip", `"kind":"ip","value":"::ffff:192.0.2.1"`,
			[]Violation{{"/value", `must be in canonical form "192.0.2.1"`}}},
		{"unmasked cidr", `"kind":"cidr","value":"10.1.2.3/8"`,
			[]Violation{{"/value", `must be in canonical form "10.0.0.0/8"`}}},
		{"bad kind", `"kind":"mac","value":"x"`,
			[]Violation{{"/kind", "must be one of: ip, cidr, header, cookie, query, jwt, consumer"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ValidateBlock(blockJSON(tt.fields))
			wantViolations(t, err, tt.want...)
		})
	}
	t.Run("times", func(t *testing.T) {
		_, err := ValidateBlock([]byte(`{"kind":"consumer","value":"a","source":"cli","createdAt":"2024-05-01T12:00:00Z","expiresAt":"2024-05-01T11:00:00Z"}`))
		wantViolations(t, err, Violation{"/expiresAt", "must be after createdAt"}, Violation{"/source", "must be one of: webhook, manual, nats, rebuild"})
		_, err = ValidateBlock([]byte(`{"kind":"consumer","value":"a","source":"manual","createdAt":"yesterday"}`))
		wantViolations(t, err, Violation{"/", `required property "expiresAt" missing`},
			Violation{"/createdAt", "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z"})
	})
}

func TestValidateAudit(t *testing.T) {
	a, err := ValidateAudit([]byte(`{"time":"2024-05-01T12:00:00Z","action":"blocked","incidentId":"i-1","eventSeq":18446744073709551615,
		"blockKey":"ip.=.=.=.1","kind":"ip","detail":"new block","actor":"consumer"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.Action != ActionBlocked || a.EventSeq != 1<<64-1 || a.Kind != EntityIP || a.Actor != "consumer" {
		t.Fatalf("decoded %+v", a)
	}
	tests := []struct {
		doc  string
		want []Violation
	}{
		{`{"time":"2024-05-01T12:00:00Z","action":"nuked"}`,
			[]Violation{{"/action", "must be one of: accepted, blocked, extended, unblocked, expired, refused, dead_letter, kong_applied, kong_failed"}}},
		{`{"action":"blocked"}`, []Violation{{"/", `required property "time" missing`}}},
		{`{"time":"2024-05-01T12:00:00Z","action":"blocked","eventSeq":-1}`, []Violation{{"/eventSeq", "must be at least 0, not -1"}}},
		{`{"time":"2024-05-01T12:00:00Z","action":"blocked","eventSeq":1e3}`,
			[]Violation{{"/eventSeq", "must be a plain integer below 2^64, without a fraction or exponent"}}},
		{`{"time":"2024-05-01T12:00:00Z","action":"blocked","eventSeq":18446744073709551616}`,
			[]Violation{{"/eventSeq", "must be a plain integer below 2^64, without a fraction or exponent"}}},
	}
	for _, tt := range tests {
		_, err := ValidateAudit([]byte(tt.doc))
		wantViolations(t, err, tt.want...)
	}
}

func TestCanonicalValue(t *testing.T) {
	tests := []struct {
		kind      EntityType
		in, want  string
		wantError bool
	}{
		{EntityIP, "203.0.113.7", "203.0.113.7", false},
		{EntityIP, "::ffff:203.0.113.7", "203.0.113.7", false},
		{EntityIP, "2001:DB8:0::1", "2001:db8::1", false},
		{EntityIP, "fe80::1%eth0", "", true},
		{EntityCIDR, "10.1.2.3/8", "10.0.0.0/8", false},
		{EntityCIDR, "::ffff:10.0.0.0/104", "10.0.0.0/8", false},
		{EntityCIDR, "2001:DB8::/32", "2001:db8::/32", false},
		{EntityCIDR, "10.0.0.0/33", "", true},
		{EntityConsumer, "Acme", "Acme", false},
	}
	for _, tt := range tests {
		got, err := CanonicalValue(tt.kind, tt.in)
		if (err != nil) != tt.wantError || got != tt.want {
			t.Errorf("CanonicalValue(%s, %q) = %q, %v", tt.kind, tt.in, got, err)
		}
	}
}

// TestEveryPatternHasAMessage: a pattern without an x-messages entry would
// show the raw regexp to whoever sent the document.
func TestEveryPatternHasAMessage(t *testing.T) {
	set, err := schemaSet()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{IncidentSchemaFile, BlockSchemaFile, AuditSchemaFile} {
		raw, err := SchemaJSON(name)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		walkSchema(doc, name, func(obj map[string]any, at string) {
			if _, ok := obj["pattern"].(string); !ok {
				return
			}
			if msgs, _ := obj["x-messages"].(map[string]any); msgs["pattern"] == nil {
				t.Errorf("%s: pattern without x-messages", at)
			}
		})
	}
	if len(set.messages) == 0 {
		t.Fatal("no x-messages collected")
	}
}

// walkSchema calls fn on every object in a schema document.
func walkSchema(v any, at string, fn func(map[string]any, string)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v, at)
		for k, sub := range v {
			if k == "x-messages" {
				continue // messages, not subschemas
			}
			walkSchema(sub, at+"/"+k, fn)
		}
	case []any:
		for i, sub := range v {
			walkSchema(sub, at+"/"+strconv.Itoa(i), fn)
		}
	}
}

func BenchmarkValidateBlock(b *testing.B) {
	data := blockJSON(`"kind":"header","name":"X-Api-Key","valueSha256":"` + sha + `","incidentId":"i-1","scope":{"service":"s"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ValidateBlock(data); err != nil {
			b.Fatal(err)
		}
	}
}
