package consumer

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

const testJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwianRpIjoiYWJjIn0.c2lnbmF0dXJl"

func TestTranslateEveryKind(t *testing.T) {
	tests := []struct {
		name  string
		e     schemas.Entity
		scope *schemas.Scope
		want  schemas.KeyParts
		raw   bool // the value is stored as is (else only its hash)
	}{
		{"ipv4", schemas.Entity{Type: "ip", Value: "203.0.113.7"}, nil, schemas.KeyParts{Kind: "ip", Value: "203.0.113.7"}, true},
		{"ipv4-mapped ipv6 is ipv4", schemas.Entity{Type: "ip", Value: "::ffff:203.0.113.7"}, nil, schemas.KeyParts{Kind: "ip", Value: "203.0.113.7"}, true},
		{"ipv6 canonical", schemas.Entity{Type: "ip", Value: "2001:DB8:0:0::1"}, nil, schemas.KeyParts{Kind: "ip", Value: "2001:db8::1"}, true},
		{"cidr masked", schemas.Entity{Type: "cidr", Value: "198.51.100.77/24"}, nil, schemas.KeyParts{Kind: "cidr", Value: "198.51.100.0/24"}, true},
		{"header name lower-cased, value hashed", schemas.Entity{Type: "header", Name: "X-Api-Key", Value: "k-123"}, nil, schemas.KeyParts{Kind: "header", Name: "x-api-key", Value: sha256Hex("k-123")}, false},
		{"cookie", schemas.Entity{Type: "cookie", Name: "session", Value: "s3cr3t"}, nil, schemas.KeyParts{Kind: "cookie", Name: "session", Value: sha256Hex("s3cr3t")}, false},
		{"query", schemas.Entity{Type: "query", Name: "api_key", Value: "q"}, nil, schemas.KeyParts{Kind: "query", Name: "api_key", Value: sha256Hex("q")}, false},
		{"jwt whole token", schemas.Entity{Type: "jwt", Value: testJWT}, nil, schemas.KeyParts{Kind: "jwt", Value: sha256Hex(testJWT)}, false},
		{"jwt claim read from token", schemas.Entity{Type: "jwt", Claim: "sub", Value: testJWT}, nil, schemas.KeyParts{Kind: "jwt", Name: "sub", Value: "user-42"}, true},
		{"jwt claim value given", schemas.Entity{Type: "jwt", Claim: "client_id", Value: "app-7"}, nil, schemas.KeyParts{Kind: "jwt", Name: "client_id", Value: "app-7"}, true},
		{"consumer", schemas.Entity{Type: "consumer", Value: "alice"}, nil, schemas.KeyParts{Kind: "consumer", Value: "alice"}, true},
		{"scoped", schemas.Entity{Type: "ip", Value: "192.0.2.1"}, &schemas.Scope{Service: "orders", Route: "checkout"}, schemas.KeyParts{Kind: "ip", Service: "orders", Route: "checkout", Value: "192.0.2.1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := translate(tt.e, tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			if got.parts != tt.want {
				t.Fatalf("parts %+v, want %+v", got.parts, tt.want)
			}
			if got.key != mustKey(t, tt.want) {
				t.Errorf("key %q does not encode the parts", got.key)
			}
			if tt.raw != (got.block.Value != "") || tt.raw == (got.block.ValueSHA256 != "") {
				t.Errorf("block value %q sha %q; raw storage wanted: %v", got.block.Value, got.block.ValueSHA256, tt.raw)
			}
			if !tt.raw && got.block.Value == tt.e.Value {
				t.Errorf("secret stored raw")
			}
		})
	}
}

// TestEveryKindIsApplied: each entity kind becomes the right key and value
// with the requested expiry and a server TTL.
func TestEveryKindIsApplied(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	entities := []schemas.Entity{
		{Type: "ip", Value: "203.0.113.7"}, {Type: "ip", Value: "2001:db8::7"}, {Type: "cidr", Value: "198.51.100.0/24"},
		{Type: "header", Name: "X-Api-Key", Value: "k-1"}, {Type: "cookie", Name: "sid", Value: "c-1"},
		{Type: "query", Name: "token", Value: "q-1"}, {Type: "jwt", Value: testJWT}, {Type: "jwt", Claim: "sub", Value: testJWT},
		{Type: "consumer", Value: "mallory"},
	}
	start := time.Now()
	seq := r.publish(r.incident(entities, func(i *schemas.Incident) { i.DurationSeconds = dur(600); i.Severity = "high" }))
	r.waitApplied(seq)
	for _, e := range entities {
		tgt, err := translate(e, nil)
		if err != nil {
			t.Fatal(err)
		}
		b := r.block(tgt.key)
		if b == nil {
			t.Errorf("%s %s: no block at %s", e.Type, e.Value, tgt.key)
			continue
		}
		if b.Kind != e.Type || b.IncidentID != "inc-1" || b.Source != schemas.SourceWebhook || b.Severity != "high" {
			t.Errorf("%s: block %+v", tgt.key, b)
		}
		if exp := b.ExpiresAt.Sub(start); exp < 599*time.Second || exp > 602*time.Second {
			t.Errorf("%s: expires in %s, want 600s", tgt.key, exp)
		}
		if b.CreatedSeq != seq || b.UpdatedSeq != seq {
			t.Errorf("%s: created/updated seq %d/%d, want %d", tgt.key, b.CreatedSeq, b.UpdatedSeq, seq)
		}
	}
	counts := actionCounts(r.audits())
	if counts[schemas.ActionBlocked] != len(entities) || counts[schemas.ActionAccepted] != 1 {
		t.Errorf("audit actions %v, want %d blocked and 1 accepted", counts, len(entities))
	}
}

func TestExtensionNeverShortens(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	ip := []schemas.Entity{{Type: "ip", Value: "192.0.2.10"}}
	key := mustKey(t, schemas.KeyParts{Kind: "ip", Value: "192.0.2.10"})

	r.waitApplied(r.publish(r.incident(ip, func(i *schemas.Incident) { i.DurationSeconds = dur(3600) })))
	first := r.block(key)
	r.waitApplied(r.publish(r.incident(ip, func(i *schemas.Incident) { i.DurationSeconds = dur(60) })))
	shorter := r.block(key)
	if !shorter.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatalf("a shorter incident moved expiry from %s to %s", first.ExpiresAt, shorter.ExpiresAt)
	}
	if len(shorter.IncidentIDs) != 2 {
		t.Errorf("incident ids %v, want both incidents remembered", shorter.IncidentIDs)
	}
	r.waitApplied(r.publish(r.incident(ip, func(i *schemas.Incident) { i.DurationSeconds = dur(7200) })))
	longer := r.block(key)
	if !longer.ExpiresAt.After(first.ExpiresAt.Add(3500 * time.Second)) {
		t.Fatalf("a longer incident did not extend: %s → %s", first.ExpiresAt, longer.ExpiresAt)
	}
	if longer.CreatedAt != first.CreatedAt || longer.IncidentID != first.IncidentID {
		t.Errorf("extension rewrote the block's origin: %+v", longer)
	}
	if ttl := r.serverTTL(key); ttl < 7100*time.Second || ttl > 7201*time.Second {
		t.Errorf("server TTL after the extension is %s, want about 2h", ttl)
	}
	counts := actionCounts(r.audits())
	if counts[schemas.ActionBlocked] != 1 || counts[schemas.ActionExtended] != 2 {
		t.Errorf("audit actions %v, want 1 blocked, 2 extended", counts)
	}
}

func TestUnblock(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	ip := []schemas.Entity{{Type: "ip", Value: "192.0.2.20"}}
	key := mustKey(t, schemas.KeyParts{Kind: "ip", Value: "192.0.2.20"})
	r.waitApplied(r.publish(r.incident(ip, nil)))
	if r.block(key) == nil {
		t.Fatal("not blocked")
	}
	r.waitApplied(r.publish(r.incident(ip, func(i *schemas.Incident) { i.Type = schemas.TypeUnblock })))
	if b := r.block(key); b != nil {
		t.Fatalf("still blocked after unblock: %+v", b)
	}
	// Blocking again after an unblock creates the key afresh.
	r.waitApplied(r.publish(r.incident(ip, nil)))
	if r.block(key) == nil {
		t.Fatal("not blocked again after unblock")
	}
	counts := actionCounts(r.audits())
	if counts[schemas.ActionBlocked] != 2 || counts[schemas.ActionUnblocked] != 1 {
		t.Errorf("audit actions %v, want 2 blocked, 1 unblocked", counts)
	}
}

func actionCounts(recs []schemas.AuditRecord) map[schemas.Action]int {
	m := map[schemas.Action]int{}
	for _, r := range recs {
		m[r.Action]++
	}
	return m
}

func auditFor(recs []schemas.AuditRecord, seq uint64) []schemas.AuditRecord {
	var out []schemas.AuditRecord
	for _, r := range recs {
		if r.EventSeq == seq && r.Action != schemas.ActionAccepted {
			out = append(out, r)
		}
	}
	return out
}

// TestKeyRoundTrip: EntityFor turns a key back into an entity that names the same key, which
// is what unblocking by key relies on.
func TestKeyRoundTrip(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	inner := b64(`{"alg":"none"}`) + "." + b64(`{"sub":"x"}`) + ".c2ln"
	nested := b64(`{"alg":"none"}`) + "." + b64(`{"sub":"`+inner+`"}`) + ".c2ln"
	tests := []struct {
		name    string
		e       schemas.Entity
		scope   *schemas.Scope
		refused bool
	}{
		{"ip", schemas.Entity{Type: "ip", Value: "203.0.113.7"}, nil, false},
		{"cidr, scoped", schemas.Entity{Type: "cidr", Value: "198.51.100.0/24"}, &schemas.Scope{Service: "s", Route: "r"}, false},
		{"header", schemas.Entity{Type: "header", Name: "X-Api-Key", Value: "k-1"}, nil, false},
		{"cookie", schemas.Entity{Type: "cookie", Name: "sid", Value: "c-1"}, nil, false},
		{"query", schemas.Entity{Type: "query", Name: "token", Value: "q-1"}, nil, false},
		{"jwt whole token", schemas.Entity{Type: "jwt", Value: testJWT}, nil, false},
		{"jwt claim", schemas.Entity{Type: "jwt", Claim: "sub", Value: testJWT}, nil, false},
		{"jwt claim holding a token", schemas.Entity{Type: "jwt", Claim: "sub", Value: nested}, nil, true},
		{"consumer", schemas.Entity{Type: "consumer", Value: "mallory"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := KeyFor(tt.e, tt.scope)
			if tt.refused {
				if err == nil {
					t.Fatalf("key %s, want a refusal", key)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e, scope, err := EntityFor(key)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := KeyFor(e, scope); err != nil || back != key {
				t.Fatalf("key %s → entity %+v → key %s (%v)", key, e, back, err)
			}
		})
	}
}
