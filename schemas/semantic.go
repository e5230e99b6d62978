package schemas

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The checks here are what JSON Schema cannot say (an IP address that
// parses, a real RFC 3339 time). They run on the generic decoded document,
// next to the schema, so that one response lists every problem; they skip
// values of the wrong JSON type or length, which the schema already reports.

// maxValueLength mirrors the schema's maxLength for entity values.
const maxValueLength = 8192

// checkIncident adds the semantic violations of an incident document.
func checkIncident(doc any, vs []Violation) []Violation {
	obj, ok := doc.(map[string]any)
	if !ok {
		return vs
	}
	vs = checkTime(obj, "detectionTime", "/detectionTime", vs)
	if n, ok := obj["durationSeconds"].(json.Number); ok {
		vs = checkPlainInteger(n, "/durationSeconds", vs)
	}
	entities, _ := obj["entities"].([]any)
	for i, e := range entities {
		ent, ok := e.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := ent["type"].(string)
		value, _ := ent["value"].(string)
		_, hasClaim := ent["claim"]
		path := "/entities/" + strconv.Itoa(i) + "/value"
		vs = checkValue(EntityType(typ), value, hasClaim, path, vs)
	}
	return vs
}

// checkBlock adds the semantic violations of a block document.
func checkBlock(doc any, vs []Violation) []Violation {
	obj, ok := doc.(map[string]any)
	if !ok {
		return vs
	}
	vs = checkTime(obj, "createdAt", "/createdAt", vs)
	vs = checkTime(obj, "expiresAt", "/expiresAt", vs)
	created, errC := parseTime(obj["createdAt"])
	expires, errE := parseTime(obj["expiresAt"])
	if errC == nil && errE == nil && !expires.After(created) {
		vs = append(vs, Violation{Path: "/expiresAt", Message: "must be after createdAt"})
	}
	kind, _ := obj["kind"].(string)
	value, _ := obj["value"].(string)
	if kind != string(EntityIP) && kind != string(EntityCIDR) {
		return vs // other values are opaque here; whole tokens are hashed
	}
	before := len(vs)
	vs = checkValue(EntityType(kind), value, false, "/value", vs)
	if len(vs) == before && checkable(value) {
		// Keys are derived from the value, so two spellings of one address
		// would be two blocks; stored values must be canonical.
		if c, err := CanonicalValue(EntityType(kind), value); err == nil && c != value {
			vs = append(vs, Violation{Path: "/value", Message: fmt.Sprintf("must be in canonical form %q", c)})
		}
	}
	return vs
}

// checkAudit adds the semantic violations of an audit record.
func checkAudit(doc any, vs []Violation) []Violation {
	obj, ok := doc.(map[string]any)
	if !ok {
		return vs
	}
	vs = checkTime(obj, "time", "/time", vs)
	if n, ok := obj["eventSeq"].(json.Number); ok {
		if _, err := strconv.ParseUint(string(n), 10, 64); err != nil {
			// Only integral, non-negative numbers get here unreported by
			// the schema: 1e3, 5.0, or more than 2^64-1.
			if f, err := strconv.ParseFloat(string(n), 64); err != nil || (f == math.Trunc(f) && f >= 0) {
				vs = append(vs, Violation{Path: "/eventSeq", Message: "must be a plain integer below 2^64, without a fraction or exponent"})
			}
		}
	}
	return vs
}

func checkTime(obj map[string]any, field, path string, vs []Violation) []Violation {
	if _, ok := obj[field].(string); !ok {
		return vs
	}
	if _, err := parseTime(obj[field]); err != nil {
		return append(vs, Violation{Path: path, Message: "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z"})
	}
	return vs
}

func parseTime(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf("not a string")
	}
	return time.Parse(time.RFC3339, s)
}

// checkPlainInteger refuses integral numbers written with a fraction or an
// exponent (3600.0, 3.6e3): JSON Schema counts them as integers but Go's
// decoder cannot put them in an int64. Non-integral or out-of-range numbers
// are left to the schema.
func checkPlainInteger(n json.Number, path string, vs []Violation) []Violation {
	if _, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return vs
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) || f < 1 || f > 31536000 {
		return vs
	}
	return append(vs, Violation{Path: path, Message: "must be written as a plain integer, without a fraction or exponent"})
}

// checkable reports whether a value is worth a semantic check: empty or
// over-long values are already refused by the schema.
func checkable(s string) bool {
	return s != "" && utf8.RuneCountInString(s) <= maxValueLength
}

// checkValue checks an entity or block value against its type. qualified is
// true when a jwt entity has a claim (or a jwt block a name): then the value
// is a claim value, not a token.
func checkValue(t EntityType, value string, qualified bool, path string, vs []Violation) []Violation {
	if !checkable(value) {
		return vs
	}
	switch t {
	case EntityIP:
		if msg := ipProblem(value); msg != "" {
			vs = append(vs, Violation{Path: path, Message: msg})
		}
	case EntityCIDR:
		p, err := netip.ParsePrefix(value)
		switch {
		case err != nil:
			vs = append(vs, Violation{Path: path, Message: "not a valid CIDR prefix: " + prefixErrorDetail(value, err)})
		case p.Bits() == 0 || p.Addr().Is4In6() && p.Bits() <= 96:
			// Never a detection, always a mistake: it would block every client.
			vs = append(vs, Violation{Path: path, Message: "refused: " + value + " would block every address"})
		}
	case EntityJWT:
		if !qualified && !looksLikeJWS(value) {
			vs = append(vs, Violation{Path: path, Message: "not a compact JWT: want three base64url segments separated by dots (or set \"claim\")"})
		}
	}
	return vs
}

func ipProblem(value string) string {
	addr, err := netip.ParseAddr(value)
	if err != nil {
		if _, perr := netip.ParsePrefix(value); perr == nil {
			return "not a valid IP address: a prefix needs type \"cidr\""
		}
		return "not a valid IP address: " + strings.TrimPrefix(err.Error(), "ParseAddr("+strconv.Quote(value)+"): ")
	}
	if addr.Zone() != "" {
		return "not a valid IP address: zones (\"%" + addr.Zone() + "\") are not allowed"
	}
	return ""
}

// prefixErrorDetail drops the input that netip echoes back: the path already
// says which value, and the value may be long.
func prefixErrorDetail(value string, err error) string {
	if !strings.Contains(value, "/") {
		return "missing \"/\" and prefix length"
	}
	msg := strings.TrimPrefix(err.Error(), "netip.ParsePrefix("+strconv.Quote(value)+"): ")
	if i := strings.LastIndexByte(value, '/'); i >= 0 {
		msg = strings.TrimPrefix(msg, "ParseAddr("+strconv.Quote(value[:i])+"): ")
	}
	return msg
}

// looksLikeJWS reports whether s has the shape of a compact JWS: three
// unpadded base64url segments, the first two non-empty (the signature is
// empty for "alg":"none", which an attacker may well send). Nothing is
// decoded or verified: blocking only needs the token's bytes.
func looksLikeJWS(s string) bool {
	segs := strings.Split(s, ".")
	if len(segs) != 3 || segs[0] == "" || segs[1] == "" {
		return false
	}
	for _, seg := range segs {
		if len(seg)%4 == 1 {
			return false // no base64 encoding has this length
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// CanonicalValue returns the one spelling of an entity value under which it
// is stored and keyed, so that "::ffff:203.0.113.7" and "203.0.113.7" are one
// block. ip: netip's form with IPv4-mapped addresses unmapped; cidr: the
// masked prefix, unmapped when it lies inside ::ffff:0:0/96; other kinds are
// returned unchanged (secrets are hashed by the caller, not here).
func CanonicalValue(t EntityType, value string) (string, error) {
	switch t {
	case EntityIP:
		if msg := ipProblem(value); msg != "" {
			return "", fmt.Errorf("%w: %s", ErrInvalid, msg)
		}
		return netip.MustParseAddr(value).Unmap().String(), nil
	case EntityCIDR:
		p, err := netip.ParsePrefix(value)
		if err != nil {
			return "", fmt.Errorf("%w: not a valid CIDR prefix: %s", ErrInvalid, prefixErrorDetail(value, err))
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked().String(), nil
	}
	return value, nil
}
