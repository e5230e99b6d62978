package schemas

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// canonicalSeeds returns the entity values of the incidents in testdata, valid and invalid,
// a few per file: entities-1001.json alone would otherwise add a thousand near-identical
// addresses.
func canonicalSeeds(t testing.TB) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(incidentsDir, "*", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed files in %s: %v", incidentsDir, err)
	}
	const perFile = 8
	seen := map[string]bool{}
	var seeds []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Entities []struct {
				Value any `json:"value"`
			} `json:"entities"`
		}
		if json.Unmarshal(b, &doc) != nil {
			continue // the invalid set has files that are not JSON, or not this shape
		}
		n := 0
		for _, e := range doc.Entities {
			v, ok := e.Value.(string)
			if !ok || seen[v] || len(v) > 256 || n == perFile {
				continue
			}
			seen[v] = true
			seeds = append(seeds, v)
			n++
		}
	}
	return seeds
}

// FuzzCanonicalValue: address and range canonicalisation never panics and agrees with
// net/netip, the parser it documents (CanonicalValue accepts no other spelling). Each value
// is tried as both an ip and a cidr entity: the same bytes are valid as at most one of them,
// and the cross-check between the two needs both.
func FuzzCanonicalValue(f *testing.F) {
	for _, v := range canonicalSeeds(f) {
		f.Add(v)
	}
	// The boundaries of the documented rules, in case the testdata loses them.
	for _, v := range []string{"::ffff:0:0/96", "::ffff:0:0/97", "::ffff:1.2.3.4/95", "::ffff:10.1.2.3",
		"fe80::1%eth0/64", "1.2.3.4%0", "::/0", "0.0.0.0/0", "2001:DB8::1/64", "::ffff:1.2.3.4/128"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		fuzzCanonicalIP(t, value)
		fuzzCanonicalCIDR(t, value)
	})
}

func fuzzCanonicalIP(t *testing.T, value string) {
	got, err := CanonicalValue(EntityIP, value)
	ref, rerr := netip.ParseAddr(value)
	if checkable(value) {
		// The incident check and the pipeline must agree, or an accepted incident would be
		// dead-lettered (or a refused one stored).
		vs := checkValue(EntityIP, value, false, "/v", nil)
		if (len(vs) == 0) != (err == nil) {
			t.Fatalf("ip %q: checkValue says %v, CanonicalValue says %v", value, vs, err)
		}
	}
	if rerr != nil || ref.Zone() != "" {
		// netip refuses, or a zone: documented as refused (a zone is local to one host).
		if err == nil {
			t.Fatalf("ip %q: accepted as %q; netip: %v, zone %q", value, got, rerr, ref.Zone())
		}
		checkRefusal(t, err)
		return
	}
	if err != nil {
		t.Fatalf("ip %q: netip accepts it, CanonicalValue refuses: %v", value, err)
	}
	if want := ref.Unmap().String(); got != want {
		t.Fatalf("ip %q: canonical %q, want netip's unmapped form %q", value, got, want)
	}
	a, err := netip.ParseAddr(got)
	if err != nil || a.Is4In6() || a.Zone() != "" || a.String() != got {
		t.Fatalf("ip %q: canonical %q is not an unmapped, zone-less address in netip's form (%v)", value, got, err)
	}
	if again, err := CanonicalValue(EntityIP, got); err != nil || again != got {
		t.Fatalf("ip %q: not idempotent: %q then %q (%v)", value, got, again, err)
	}
	// One attacker, one key: an address and its single-address range name the same host.
	host := value + "/" + strconv.Itoa(ref.BitLen())
	want := got + "/" + strconv.Itoa(a.BitLen())
	if c, err := CanonicalValue(EntityCIDR, host); err != nil || c != want {
		t.Fatalf("cidr %q: canonical %q (%v), want %q like its address", host, c, err, want)
	}
}

func fuzzCanonicalCIDR(t *testing.T, value string) {
	got, err := CanonicalValue(EntityCIDR, value)
	ref, rerr := netip.ParsePrefix(value)
	if rerr != nil {
		if err == nil {
			t.Fatalf("cidr %q: accepted as %q; netip refuses it: %v", value, got, rerr)
		}
		checkRefusal(t, err)
		if checkable(value) && len(checkValue(EntityCIDR, value, false, "/v", nil)) == 0 {
			t.Fatalf("cidr %q: checkValue accepts what CanonicalValue refuses (%v)", value, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("cidr %q: netip accepts it, CanonicalValue refuses: %v", value, err)
	}
	p, err := netip.ParsePrefix(got)
	if err != nil || p.String() != got || p != p.Masked() {
		t.Fatalf("cidr %q: canonical %q is not a masked prefix in netip's form (%v)", value, got, err)
	}
	// Documented: unmapped when it lies inside ::ffff:0:0/96.
	if p.Addr().Is6() && p.Addr().Is4In6() && p.Bits() >= 96 {
		t.Fatalf("cidr %q: canonical %q is an IPv4-mapped range left mapped", value, got)
	}
	// The same addresses as the input: a prefix of the same size that holds the input's
	// address (as IPv4 when the range was unmapped).
	point := ref.Addr()
	if p.Addr().Is4() {
		point = point.Unmap()
	}
	if !p.Contains(point) || p.Addr().BitLen()-p.Bits() != ref.Addr().BitLen()-ref.Bits() {
		t.Fatalf("cidr %q: canonical %q is not the same range", value, got)
	}
	if again, err := CanonicalValue(EntityCIDR, got); err != nil || again != got {
		t.Fatalf("cidr %q: not idempotent: %q then %q (%v)", value, got, again, err)
	}
	// CanonicalValue itself refuses no range; the incident check refuses the ones that would
	// block every address. Whatever passes it must stay narrower than everything once
	// canonical, and the stored block must pass checkBlock (valid and canonical).
	if checkable(value) && len(checkValue(EntityCIDR, value, false, "/v", nil)) == 0 {
		if p.Bits() == 0 {
			t.Fatalf("cidr %q: passes the incident check but canonicalises to %q, every address", value, got)
		}
		if vs := checkValue(EntityCIDR, got, false, "/value", nil); len(vs) != 0 {
			t.Fatalf("cidr %q: canonical %q fails the block check: %v", value, got, vs)
		}
	}
}

// checkRefusal: a refusal wraps ErrInvalid and says why.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("refusal does not wrap ErrInvalid: %v", err)
	}
	msg, ok := strings.CutPrefix(err.Error(), ErrInvalid.Error()+": ")
	if !ok || strings.TrimSpace(msg) == "" {
		t.Fatalf("refusal without a reason: %q", err.Error())
	}
}
