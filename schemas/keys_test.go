package schemas

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// natsKeyRE is the NATS KV key syntax (nats.go's validKeyRe).
var natsKeyRE = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func checkKey(t testing.TB, key string) {
	t.Helper()
	if !natsKeyRE.MatchString(key) {
		t.Fatalf("key %q is not a valid NATS KV key", key)
	}
	if strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") || strings.Contains(key, "..") {
		t.Fatalf("key %q has an empty token", key)
	}
}

func TestBlockKeyRoundTrip(t *testing.T) {
	sha := strings.Repeat("ab12", 16)
	tests := []struct {
		name string
		in   KeyParts
		want string
	}{
		{"ipv4", KeyParts{Kind: EntityIP, Value: "203.0.113.7"}, "ip.=.=.=.203_2E0_2E113_2E7"},
		{"ipv6", KeyParts{Kind: EntityIP, Value: "2001:db8::1"}, "ip.=.=.=.2001_3Adb8_3A_3A1"},
		{"ipv4-mapped", KeyParts{Kind: EntityIP, Value: "::ffff:192.0.2.1"}, "ip.=.=.=._3A_3Affff_3A192_2E0_2E2_2E1"},
		{"cidr", KeyParts{Kind: EntityCIDR, Value: "2001:db8::/32"}, "cidr.=.=.=.2001_3Adb8_3A_3A_2F32"},
		{"header", KeyParts{Kind: EntityHeader, Name: "x-api-key", Value: sha}, "header.=.=.x-api-key." + sha},
		{"header with space", KeyParts{Kind: EntityHeader, Name: "X API Key", Value: sha}, "header.=.=.X_20API_20Key." + sha},
		{"header with dot and underscore", KeyParts{Kind: EntityHeader, Name: "x.my_key", Value: sha}, "header.=.=.x_2Emy_5Fkey." + sha},
		{"unicode name", KeyParts{Kind: EntityQuery, Name: "clé", Value: sha}, "query.=.=.cl_C3_A9." + sha},
		{"scoped", KeyParts{Kind: EntityCookie, Service: "orders", Route: "list_v2", Name: "sid", Value: sha}, "cookie.orders.list_5Fv2.sid." + sha},
		{"route only", KeyParts{Kind: EntityConsumer, Route: "r", Value: "acme"}, "consumer.=.r.=.acme"},
		{"equals and escapes", KeyParts{Kind: EntityJWT, Name: "=", Value: "_2E"}, "jwt.=.=._3D._5F2E"},
		{"all empty", KeyParts{Kind: EntityConsumer}, "consumer.=.=.=.="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := BlockKey(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if key != tt.want {
				t.Fatalf("BlockKey = %q, want %q", key, tt.want)
			}
			checkKey(t, key)
			back, err := ParseBlockKey(key)
			if err != nil {
				t.Fatalf("ParseBlockKey(%q): %v", key, err)
			}
			if back != tt.in {
				t.Fatalf("round trip: got %+v, want %+v", back, tt.in)
			}
		})
	}
}

func TestBlockKeyErrors(t *testing.T) {
	tests := []struct {
		name string
		in   KeyParts
	}{
		{"unknown kind", KeyParts{Kind: "mac", Value: "x"}},
		{"empty kind", KeyParts{Value: "x"}},
		{"too long", KeyParts{Kind: EntityConsumer, Value: strings.Repeat("é", MaxKeyLength/6+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := BlockKey(tt.in); !errors.Is(err, ErrBadKey) {
				t.Fatalf("want ErrBadKey, got %v", err)
			}
		})
	}
}

// TestParseBlockKeyRefuses lists keys BlockKey never produces; accepting
// any of them would give one block two keys.
func TestParseBlockKeyRefuses(t *testing.T) {
	for _, key := range []string{
		"",
		"ip",
		"ip.=.=.=",
		"ip.=.=.=.1.2",
		"mac.=.=.=.x",
		"IP.=.=.=.x",
		"ip.=.=..x",
		"ip.=.=.=.",
		"ip.=.=.=.a_2e",      // lowercase hex
		"ip.=.=.=.a_41",      // escaped "A", which passes through
		"ip.=.=.=.a_2D",      // escaped "-"
		"ip.=.=.=.a_2",       // truncated escape
		"ip.=.=.=.a_",        // truncated escape
		"ip.=.=.=.a_G0",      // not hex
		"ip.=.=.=.a=",        // "=" inside a token
		"ip.=.=.=.==",        // doubled empty marker
		"ip.=.=.=.a/b",       // "/" is a valid NATS key byte but not ours
		"ip.=.=.=.a b",       // space
		"ip.=.=.=.caf\u00e9", // raw non-ASCII
		"ip.=.=.=." + strings.Repeat("a", MaxKeyLength),
	} {
		if _, err := ParseBlockKey(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseBlockKey(%q): want ErrBadKey, got %v", key, err)
		}
	}
}

func FuzzBlockKey(f *testing.F) {
	f.Add(uint8(0), "", "", "", "203.0.113.7")
	f.Add(uint8(1), "svc", "route.1", "", "2001:db8::/32")
	f.Add(uint8(2), "", "", "X API_Key", "ab12")
	f.Add(uint8(4), "s=", "_2E", "clé", "\x00\xff.")
	f.Fuzz(func(t *testing.T, kindIdx uint8, service, route, name, value string) {
		kinds := EntityTypes()
		in := KeyParts{Kind: kinds[int(kindIdx)%len(kinds)], Service: service, Route: route, Name: name, Value: value}
		key, err := BlockKey(in)
		if err != nil {
			if !errors.Is(err, ErrBadKey) || len(service)+len(route)+len(name)+len(value) < MaxKeyLength/3-16 {
				t.Fatalf("BlockKey(%+v): unexpected error %v", in, err)
			}
			return
		}
		checkKey(t, key)
		if again, _ := BlockKey(in); again != key {
			t.Fatalf("not deterministic: %q then %q", key, again)
		}
		back, err := ParseBlockKey(key)
		if err != nil {
			t.Fatalf("ParseBlockKey(%q): %v", key, err)
		}
		if back != in {
			t.Fatalf("round trip: got %+v, want %+v", back, in)
		}
	})
}

// FuzzParseBlockKey checks the other direction of the bijection: whatever
// ParseBlockKey accepts re-encodes to the very same key.
func FuzzParseBlockKey(f *testing.F) {
	f.Add("ip.=.=.=.203_2E0_2E113_2E7")
	f.Add("header.svc.=.x-api-key.ab12")
	f.Add("ip.=.=.=.a_2e")
	f.Fuzz(func(t *testing.T, key string) {
		parts, err := ParseBlockKey(key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error does not wrap ErrBadKey: %v", err)
			}
			return
		}
		again, err := BlockKey(parts)
		if err != nil || again != key {
			t.Fatalf("ParseBlockKey(%q) = %+v, which encodes to %q (%v)", key, parts, again, err)
		}
	})
}
