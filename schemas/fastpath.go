package schemas

import (
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// The santhosh-tekuri validator allocates a sub-validator for every
// subschema it enters (each if/then of each entity), so a three-entity
// incident costs tens of microseconds there. ParseIncident runs on every
// webhook request, so valid incidents, by far the common case, are first
// checked by incidentFitsSchema, a hand-written equivalent of
// incident.schema.json. It may only answer "certainly valid"; on any doubt
// it answers false and the real validator runs and words the violations.
// The schema stays the contract: TestFastPathAgrees and FuzzParseIncident
// check that whatever this accepts, the schema accepts too.

func incidentFitsSchema(doc any) bool {
	obj, ok := doc.(map[string]any)
	if !ok {
		return false
	}
	id, ok := obj["id"].(string)
	if !ok || !runesBetween(id, 1, MaxIDLength) || hasControl(id) {
		return false
	}
	if !optEnum(obj, "type", "incident", "block", "unblock") ||
		!optEnum(obj, "severity", "info", "low", "medium", "high", "critical") ||
		!optString(obj, "title", 0, 512) || !optString(obj, "status", 0, 64) ||
		!optString(obj, "detectionTime", 0, -1) {
		return false
	}
	if v, ok := obj["api"]; ok {
		api, ok := v.(map[string]any)
		if !ok || !optString(api, "host", 0, 1024) || !optString(api, "path", 0, 8192) || !optString(api, "method", 0, 64) {
			return false
		}
	}
	if v, ok := obj["durationSeconds"]; ok {
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		d, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || d < 1 || d > 31536000 {
			return false
		}
	}
	if v, ok := obj["scope"]; ok && !scopeFits(v) {
		return false
	}
	entities, ok := obj["entities"].([]any)
	if !ok || len(entities) < 1 || len(entities) > MaxEntities {
		return false
	}
	for _, e := range entities {
		if !entityFits(e) {
			return false
		}
	}
	return true
}

func scopeFits(v any) bool {
	scope, ok := v.(map[string]any)
	if !ok || len(scope) == 0 {
		return false
	}
	for k, val := range scope {
		s, ok := val.(string)
		if !ok || (k != "service" && k != "route") || !runesBetween(s, 1, 256) {
			return false
		}
	}
	return true
}

func entityFits(v any) bool {
	ent, ok := v.(map[string]any)
	if !ok {
		return false
	}
	var typ, value, hash, name, claim string
	var hasValue, hasHash, hasName, hasClaim bool
	for k, val := range ent {
		s, ok := val.(string)
		if !ok {
			return false
		}
		switch k {
		case "type":
			typ = s
		case "value":
			value, hasValue = s, true
		case "valueSha256":
			hash, hasHash = s, true
		case "name":
			name, hasName = s, true
		case "claim":
			claim, hasClaim = s, true
		default:
			return false
		}
	}
	t := EntityType(typ)
	if !t.Valid() || hasValue == hasHash {
		return false
	}
	if hasValue && !runesBetween(value, 1, maxValueLength) {
		return false
	}
	if hasHash && (!isSHA256Hex(hash) || hasClaim || !(t.HasName() || t == EntityJWT)) {
		return false
	}
	if hasName != t.HasName() || (hasClaim && t != EntityJWT) {
		return false
	}
	if hasName && (!runesBetween(name, 1, 256) || !nameFits(t, name)) {
		return false
	}
	return !hasClaim || (runesBetween(claim, 1, 128) && !hasControl(claim))
}

// isSHA256Hex: 64 lowercase hex digits.
func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// nameFits mirrors the per-type name patterns of the schema.
func nameFits(t EntityType, name string) bool {
	for _, r := range name {
		switch t {
		case EntityHeader:
			if r >= utf8.RuneSelf || !isTchar(byte(r)) {
				return false
			}
		case EntityCookie:
			// [^\p{Cc}\s=;,] where RE2's \s is [\t\n\f\r ].
			if unicode.Is(unicode.Cc, r) || r == ' ' || r == '=' || r == ';' || r == ',' {
				return false
			}
		default:
			if unicode.Is(unicode.Cc, r) {
				return false
			}
		}
	}
	return true
}

// isTchar reports whether c is an RFC 7230 token character.
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Cc, r) {
			return true
		}
	}
	return false
}

// runesBetween counts characters as JSON Schema does: code points.
func runesBetween(s string, lo, hi int) bool {
	if len(s) < lo { // fewer bytes than lo means fewer runes too
		return false
	}
	n := utf8.RuneCountInString(s)
	return n >= lo && n <= hi
}

// optString accepts an absent key or a string of lo..hi characters (hi < 0:
// unbounded).
func optString(obj map[string]any, key string, lo, hi int) bool {
	v, ok := obj[key]
	if !ok {
		return true
	}
	s, ok := v.(string)
	if !ok {
		return false
	}
	if hi < 0 {
		return true
	}
	return runesBetween(s, lo, hi)
}

func optEnum(obj map[string]any, key string, allowed ...string) bool {
	v, ok := obj[key]
	if !ok {
		return true
	}
	s, ok := v.(string)
	if !ok {
		return false
	}
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}
