package consumer

import (
	"testing"

	"github.com/blockwire/blockwire/schemas"
)

// FuzzTranslate: canonicalisation of addresses, ranges, names and JWT
// extraction never panics; whatever it accepts has a valid key that parses
// back to the same parts, and translating the canonical value again gives
// the same key (one attacker, one key).
func FuzzTranslate(f *testing.F) {
	seeds := []struct{ kind, value, name, claim string }{
		{"ip", "203.0.113.7", "", ""}, {"ip", "::ffff:203.0.113.7", "", ""}, {"ip", "2001:DB8::1", "", ""},
		{"cidr", "198.51.100.77/24", "", ""}, {"cidr", "::ffff:10.0.0.0/104", "", ""}, {"cidr", "0.0.0.0/0", "", ""},
		{"header", "k-123", "X-Api-Key", ""}, {"cookie", "s", "session", ""}, {"query", "q", "api_key", ""},
		{"jwt", testJWT, "", ""}, {"jwt", testJWT, "", "sub"}, {"jwt", "aaaa.bbbb.cccc", "", ""},
		{"jwt", "eyJhbGciOiJub25lIn0.bm90LWpzb24.c2ln", "", "sub"}, {"consumer", "alice", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.kind, s.value, s.name, s.claim)
	}
	f.Fuzz(func(t *testing.T, kind, value, name, claim string) {
		e := schemas.Entity{Type: schemas.EntityType(kind), Value: value, Name: name, Claim: claim}
		tgt, err := translate(e, nil)
		if err != nil {
			return
		}
		parts, err := schemas.ParseBlockKey(tgt.key)
		if err != nil {
			t.Fatalf("key %q of %+v does not parse: %v", tgt.key, e, err)
		}
		if parts != tgt.parts {
			t.Fatalf("key %q parses to %+v, want %+v", tgt.key, parts, tgt.parts)
		}
		g := Guardrails{}
		_ = g.defaults()
		_ = g.checkAddress(tgt) // must not panic on any canonical value
		if e.Type == schemas.EntityIP || e.Type == schemas.EntityCIDR {
			again, err := translate(schemas.Entity{Type: e.Type, Value: tgt.parts.Value}, nil)
			if err != nil || again.key != tgt.key {
				t.Fatalf("canonical %q of %q gives key %q (%v), want %q", tgt.parts.Value, value, again.key, err, tgt.key)
			}
		}
	})
}
