package enforcer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

const fuzzSeeds = "testdata/fuzz-seeds"

// authScheme is what precedes a token in its Authorization header: the scheme in two
// spellings, or nothing (a bare token counts when it looks like a compact JWT).
func authScheme(form uint8) string {
	switch form % 3 {
	case 0:
		return "Bearer "
	case 1:
		return "bEaReR  "
	}
	return ""
}

// jwtSeeds returns tokens built from the payloads in testdata/fuzz-seeds/claims.txt (one a
// line, not all of them JSON), unpadded and padded, and the jwt values of the incident
// testdata, which are real-looking tokens, some with a scheme.
func jwtSeeds(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fuzzSeeds, "claims.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		toks = append(toks, jwtToken(t, sc.Text()),
			"eyJhbGciOiJub25lIn0."+base64.URLEncoding.EncodeToString(sc.Bytes())+".")
	}
	paths, err := filepath.Glob("../testdata/incidents/*/jwt-*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no jwt incidents in ../testdata/incidents: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var inc struct {
			Entities []struct{ Type, Value string }
		}
		if json.Unmarshal(b, &inc) != nil {
			continue
		}
		for _, e := range inc.Entities {
			if e.Type == "jwt" {
				toks = append(toks, e.Value)
			}
		}
	}
	return toks
}

// claim is one top-level member of a token's payload as encoding/json reads it. ok: the
// value can match a block (a string as it is, a number as consumer.claimValue prints it);
// raw is the member's JSON text.
type claim struct {
	name, value, raw string
	ok               bool
}

// refClaims reads tok's payload with encoding/base64 and encoding/json, the way the consumer
// derives jwt-by-claim blocks. decoded: the second segment is base64url (the plugin, like
// some issuers, tolerates "=" padding, so any trailing "=" is dropped first); valid: it is a
// JSON object encoding/json accepts. Every member is listed, duplicates included.
func refClaims(t *testing.T, tok string) (claims []claim, decoded, valid bool) {
	t.Helper()
	segs := strings.Split(tok, ".")
	if len(segs) < 3 {
		return nil, false, false
	}
	p, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(segs[1], "="))
	if err != nil {
		return nil, false, false
	}
	var m map[string]any
	if json.Unmarshal(p, &m) != nil {
		return nil, true, false
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("payload %q: %v", p, err)
	}
	for dec.More() {
		k, err := dec.Token()
		var raw json.RawMessage
		if err == nil {
			err = dec.Decode(&raw)
		}
		var v any
		if err == nil {
			err = json.Unmarshal(raw, &v)
		}
		if err != nil {
			t.Fatalf("payload %q: encoding/json accepts it whole, not member by member: %v", p, err)
		}
		c := claim{name: k.(string), raw: string(raw)}
		switch v := v.(type) {
		case string:
			c.value, c.ok = v, true
		case float64:
			c.value, c.ok = fmt.Sprint(v), true
		}
		claims = append(claims, c)
	}
	return claims, true, true
}

// checkBearer: bearerToken returns what follows a Bearer scheme, or a bare value that looks
// like a compact JWT (no space, two dots), trimmed; nothing else.
func checkBearer(t *testing.T, scheme, tok, got string) {
	t.Helper()
	want := strings.TrimSpace(tok)
	if scheme == "" {
		switch {
		case len(want) > 7 && strings.EqualFold(want[:7], "bearer "):
			return // the fuzzer wrote the scheme itself
		case strings.Contains(want, " ") || strings.Count(want, ".") != 2:
			want = ""
		}
	}
	if got != want {
		t.Fatalf("bearerToken(%q) = %q, want %q", scheme+tok, got, want)
	}
}

// FuzzJWTClaims: the plugin's JWT extraction (bearerToken, then matchClaims' hand-written
// base64 and JSON scan) agrees with encoding/base64 + encoding/json. A block on one of the
// token's claims (name and value as the reference read them, or a near miss) blocks the
// request exactly when the reference finds that claim with that value. Where the scanner
// differs on purpose, the property follows it:
//   - duplicate names: encoding/json keeps the last, the scanner matches any; the reference
//     lists every member, since a token must not hide a blocked claim behind a duplicate;
//   - only strings and numbers match (consumer.claimValue stores nothing else), so a block
//     spelling "true" or an object's JSON never matches;
//   - JSON that encoding/json refuses (truncated, trailing data, deeper than its nesting
//     limit) has no reference: the scanner reads what it can, on the blocking side;
//   - a token with fewer than three segments, or whose second is not base64url, never
//     matches; one with more (a JWE has five) has no reference: the consumer reads only
//     three-segment tokens.
func FuzzJWTClaims(f *testing.F) {
	for i, tok := range jwtSeeds(f) {
		f.Add(tok, uint8(i), uint8(i))
		f.Add(tok, uint8(0), uint8(i)|0x80)
	}
	f.Fuzz(func(t *testing.T, tok string, form, pick uint8) {
		header := authScheme(form) + tok
		seen := bearerToken(header)
		checkBearer(t, authScheme(form), tok, seen)

		claims, decoded, valid := refClaims(t, seen)
		name, value := "sub", "user-1"
		if len(claims) > 0 {
			c := claims[int(pick&0x7f)%len(claims)]
			name, value = c.name, c.value
			if !c.ok {
				value = c.raw
			}
			if pick&0x80 != 0 {
				value += "~" // a near miss: blocks only if another member has that value
			}
		}
		if name == "" {
			return // a jwt block without a name is a whole-token block, not a claim block
		}
		w := newTestWriter(t, blk{kind: schemas.EntityJWT, name: name, value: value})
		m := matcher{x: w.idx, p: w.idx.plan.Load(), now: time.Now().UnixMilli()}
		v, err := m.evaluate(&fakeRequest{headers: map[string][]string{"authorization": {header}}}, scopeIDs{})
		if err != nil {
			t.Fatalf("evaluate: %v", err)
		}
		if v.blocked && v.kind != schemas.EntityJWT {
			t.Fatalf("blocked by %s, want jwt", v.kind)
		}
		switch {
		case !decoded || strings.Count(seen, ".") < 2:
			if v.blocked {
				t.Fatalf("token %q has no base64url payload, yet a block on %q=%q matched it", seen, name, value)
			}
			return
		case !valid || strings.Count(seen, ".") > 2:
			return // no reference: see above
		}
		want := false
		for _, c := range claims {
			want = want || c.ok && c.name == name && c.value == value
		}
		if v.blocked != want {
			t.Fatalf("token %q, claims %+v: a block on %q=%q matched = %v, want %v", seen, claims, name, value, v.blocked, want)
		}
	})
}
