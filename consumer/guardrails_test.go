package consumer

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// TestGuardrailsRefuse: each case is refused with its reason in the audit
// trail, and the bucket is left exactly as it was.
func TestGuardrailsRefuse(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(func(c *Config) {
		c.Guardrails.NeverBlock = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("2001:db8:1::/48")}
	}))
	const fakeJWTNoJSON = "eyJhbGciOiJub25lIn0.bm90LWpzb24.c2ln" // header ok, payload "not-json"
	tests := []struct {
		name   string
		e      schemas.Entity
		mutate func(*schemas.Incident)
		reason string // refused reason; "" when the whole message is dead-lettered
	}{
		{"ipv4 range wider than /16", schemas.Entity{Type: "cidr", Value: "10.0.0.0/8"}, nil, ReasonRangeTooWide},
		{"ipv4 /1", schemas.Entity{Type: "cidr", Value: "128.0.0.0/1"}, nil, ReasonRangeTooWide},
		{"ipv6 range wider than /48", schemas.Entity{Type: "cidr", Value: "2001:db8::/32"}, nil, ReasonRangeTooWide},
		{"mapped ipv4 range /8", schemas.Entity{Type: "cidr", Value: "::ffff:10.0.0.0/104"}, nil, ReasonRangeTooWide},
		{"loopback ipv4", schemas.Entity{Type: "ip", Value: "127.0.0.1"}, nil, ReasonNeverBlock},
		{"loopback ipv6", schemas.Entity{Type: "ip", Value: "::1"}, nil, ReasonNeverBlock},
		{"loopback ipv4-mapped", schemas.Entity{Type: "ip", Value: "::ffff:127.0.0.1"}, nil, ReasonNeverBlock},
		{"range inside loopback", schemas.Entity{Type: "cidr", Value: "127.0.0.0/16"}, nil, ReasonNeverBlock},
		{"listed Kong node", schemas.Entity{Type: "ip", Value: "10.1.2.3"}, nil, ReasonNeverBlock},
		{"listed Kong node, mapped", schemas.Entity{Type: "ip", Value: "::ffff:10.1.2.3"}, nil, ReasonNeverBlock},
		{"range containing a listed address", schemas.Entity{Type: "cidr", Value: "10.1.0.0/16"}, nil, ReasonNeverBlock},
		{"ipv6 inside a listed range", schemas.Entity{Type: "ip", Value: "2001:db8:1::5"}, nil, ReasonNeverBlock},
		{"duration over the cap", schemas.Entity{Type: "ip", Value: "192.0.2.50"}, func(i *schemas.Incident) { i.DurationSeconds = dur(31 * 86400) }, ReasonTooLong},
		{"unblock of something never blocked", schemas.Entity{Type: "ip", Value: "192.0.2.51"}, func(i *schemas.Incident) { i.Type = schemas.TypeUnblock }, ReasonNotBlocked},
		{"whole token that is not a JWT", schemas.Entity{Type: "jwt", Value: "aaaa.bbbb.cccc"}, nil, ReasonNotJWT},
		{"claim of a token whose payload is not JSON", schemas.Entity{Type: "jwt", Claim: "sub", Value: fakeJWTNoJSON}, nil, ReasonNotJWT},
		{"claim the token lacks", schemas.Entity{Type: "jwt", Claim: "client_id", Value: testJWT}, nil, ReasonNoClaim},
		{"block everything: dead-lettered by the contract", schemas.Entity{Type: "cidr", Value: "0.0.0.0/0"}, nil, ""},
		{"header name with spaces: dead-lettered by the contract", schemas.Entity{Type: "header", Name: "X Api Key", Value: "v"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.keys()
			seq := r.publish(r.incident([]schemas.Entity{tt.e}, tt.mutate))
			r.waitApplied(seq)
			if got := r.keys(); !slices.Equal(got, before) {
				t.Fatalf("bucket changed: %v → %v", before, got)
			}
			recs := auditFor(r.audits(), seq)
			if tt.reason == "" {
				if len(recs) != 1 || recs[0].Action != schemas.ActionDeadLetter {
					t.Fatalf("audit %+v, want one dead_letter", recs)
				}
				return
			}
			if len(recs) != 1 || recs[0].Action != schemas.ActionRefused || !strings.HasPrefix(recs[0].Detail, tt.reason+":") {
				t.Fatalf("audit %+v, want one refused with reason %s", recs, tt.reason)
			}
		})
	}
}

// TestRefusalDoesNotStopTheRest: one refused entity, the others applied.
func TestRefusalDoesNotStopTheRest(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(nil))
	seq := r.publish(r.incident([]schemas.Entity{
		{Type: "ip", Value: "127.0.0.1"}, {Type: "ip", Value: "192.0.2.60"}, {Type: "cidr", Value: "10.0.0.0/8"}, {Type: "ip", Value: "192.0.2.61"},
	}, nil))
	r.waitApplied(seq)
	if n := len(r.keys()); n != 2 {
		t.Fatalf("%d keys, want the 2 acceptable addresses", n)
	}
	counts := actionCounts(auditFor(r.audits(), seq))
	if counts[schemas.ActionRefused] != 2 || counts[schemas.ActionBlocked] != 2 {
		t.Fatalf("actions %v, want 2 refused and 2 blocked", counts)
	}
}

func TestCeiling(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(func(c *Config) { c.Guardrails.MaxActiveBlocks = 2 }))
	ip := func(v string) []schemas.Entity { return []schemas.Entity{{Type: "ip", Value: v}} }
	r.waitApplied(r.publish(r.incident(append(ip("192.0.2.70"), ip("192.0.2.71")...), nil)))
	seq := r.publish(r.incident(ip("192.0.2.72"), nil))
	r.waitApplied(seq)
	recs := auditFor(r.audits(), seq)
	if len(recs) != 1 || !strings.HasPrefix(recs[0].Detail, ReasonCeiling+":") {
		t.Fatalf("audit %+v, want the third block refused at the ceiling", recs)
	}
	// An extension of an existing block is still applied at the ceiling.
	seq = r.publish(r.incident(ip("192.0.2.70"), func(i *schemas.Incident) { i.DurationSeconds = dur(7200) }))
	r.waitApplied(seq)
	if recs := auditFor(r.audits(), seq); len(recs) != 1 || recs[0].Action != schemas.ActionExtended {
		t.Fatalf("audit %+v, want the extension applied", recs)
	}
}

func TestGuardrailConfigRefused(t *testing.T) {
	tests := []struct {
		name string
		g    Guardrails
	}{
		{"min prefix /0", Guardrails{MinPrefixV4: -1}},
		{"v6 prefix over 128", Guardrails{MinPrefixV6: 129}},
		{"default above max", Guardrails{DefaultDuration: 48 * time.Hour, MaxDuration: time.Hour}},
		{"negative ceiling", Guardrails{MaxActiveBlocks: -5}},
		{"invalid never-block entry", Guardrails{NeverBlock: []netip.Prefix{{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.g.defaults(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestGuardrailDefaultsKeepCallersList: filling the defaults (as New,
// Rebuild, Validate and Preflight do) canonicalises and extends a copy of
// NeverBlock, never the caller's slice, even when it has room to grow.
func TestGuardrailDefaultsKeepCallersList(t *testing.T) {
	list := make([]netip.Prefix, 1, 8)
	list[0] = netip.MustParsePrefix("::ffff:10.1.2.3/128") // canonical form is 10.1.2.3/32
	want := slices.Clone(list[:cap(list)])
	g := Guardrails{NeverBlock: list}
	if err := g.defaults(); err != nil {
		t.Fatal(err)
	}
	if got := list[:cap(list)]; !slices.Equal(got, want) {
		t.Fatalf("caller's backing array now %v, was %v", got, want)
	}
	if g.NeverBlock[0] != netip.MustParsePrefix("10.1.2.3/32") || len(g.NeverBlock) != 1+len(loopback) {
		t.Fatalf("defaulted list %v", g.NeverBlock)
	}
	key, err := Guardrails{NeverBlock: list}.Preflight(schemas.Entity{Type: "ip", Value: "::ffff:198.51.100.7"}, nil, nil)
	if want, _ := KeyFor(schemas.Entity{Type: "ip", Value: "198.51.100.7"}, nil); err != nil || key != want {
		t.Fatalf("Preflight = %q, %v; want %q", key, err, want)
	}
}

func TestCanonicalPrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.1.2.3/24", "10.1.2.0/24"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:10.1.2.3/128", "10.1.2.3/32"},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0"},
		{"::ffff:0.0.0.0/80", "0.0.0.0/0"}, // wider than all of IPv4: all of IPv4
		{"2001:db8::1/32", "2001:db8::/32"},
	}
	for _, tt := range tests {
		if got := canonicalPrefix(netip.MustParsePrefix(tt.in)); got != netip.MustParsePrefix(tt.want) {
			t.Errorf("canonicalPrefix(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestCeilingUnderConcurrency: incidents applied at once reserve their slots before they
// publish, so together they stay under the ceiling.
func TestCeilingUnderConcurrency(t *testing.T) {
	r := newRig(t)
	c := r.newConsumer(func(c *Config) { c.Guardrails.MaxActiveBlocks = 10 })
	var wg sync.WaitGroup
	for w := range 8 {
		var es []schemas.Entity
		for i := range 10 {
			es = append(es, schemas.Entity{Type: "ip", Value: fmt.Sprintf("198.51.100.%d", 10*w+i)})
		}
		data := mustJSON(t, r.incident(es, nil))
		wg.Go(func() {
			if err := c.process(t.Context(), natsMsg("x", nil).Header, data, uint64(100+w), time.Now()); err != nil {
				t.Errorf("incident %d: %v", w, err)
			}
		})
	}
	wg.Wait()
	if n := len(r.keys()); n > 10 {
		t.Fatalf("%d blocks in the bucket, the ceiling is 10", n)
	}
}

// TestCeilingIgnoresMarkers: unblocked keys leave purge markers in the bucket's stream for the
// marker TTL; they are not blocks, and must not hold the ceiling's slots.
func TestCeilingIgnoresMarkers(t *testing.T) {
	r := newRig(t)
	r.run(r.newConsumer(func(c *Config) { c.Guardrails.MaxActiveBlocks = 2 }))
	ip := func(v string) []schemas.Entity { return []schemas.Entity{{Type: "ip", Value: v}} }
	unblock := func(i *schemas.Incident) { i.Type = schemas.TypeUnblock }
	r.waitApplied(r.publish(r.incident(append(ip("192.0.2.70"), ip("192.0.2.71")...), nil)))
	r.waitApplied(r.publish(r.incident(append(ip("192.0.2.70"), ip("192.0.2.71")...), unblock)))
	if keys := r.keys(); len(keys) != 0 {
		t.Fatalf("keys %v after the unblock", keys)
	}
	// Past the count's refresh period, so the server's count (markers included) is read again.
	time.Sleep(1100 * time.Millisecond)
	seq := r.publish(r.incident(ip("192.0.2.72"), nil))
	r.waitApplied(seq)
	if recs := auditFor(r.audits(), seq); len(recs) != 1 || recs[0].Action != schemas.ActionBlocked {
		t.Fatalf("audit %+v, want the block applied with no block in the bucket", recs)
	}
}
