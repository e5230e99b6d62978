package enforcer

import (
	"strings"
)

// nextPair takes the next name=value pair off the front of *s, whose pairs are separated
// by sep, and reports false when none is left. A part without "=" has an empty value.
// With trim, spaces and tabs around each part are dropped (cookies: "a=1; b=2"). Empty
// parts ("a=1;;b=2", "a=1; ") are not pairs and are skipped; "=" is a pair with an empty
// name and value.
func nextPair(s *string, sep byte, trim bool) (name, value string, ok bool) {
	for len(*s) > 0 {
		part := *s
		if i := strings.IndexByte(part, sep); i >= 0 {
			part, *s = part[:i], part[i+1:]
		} else {
			*s = ""
		}
		if trim {
			part = trimSpace(part)
		}
		if part == "" {
			continue
		}
		if i := strings.IndexByte(part, '='); i >= 0 {
			return part[:i], part[i+1:], true
		}
		return part, "", true
	}
	return "", "", false
}

// unescapeBufSize is the size of the buffer queryUnescape decodes into without allocating:
// query names and values are rarely longer.
const unescapeBufSize = 128

// queryUnescape decodes a query argument as ngx.decode_args does: "+" is a space, %XX a
// byte, and a malformed escape stays as it is. With nothing to decode it returns s; else
// the result is written to buf when s fits in it (the result then views buf, so it is valid
// only until buf is reused and must not be retained) and allocated only when s is longer.
func queryUnescape(s string, buf *[unescapeBufSize]byte) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	var b []byte
	if len(s) <= len(buf) { // the decoded form is never longer than s
		b = buf[:0]
	} else {
		b = make([]byte, 0, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return bytesString(b)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// decodeHex32 decodes 64 hex digits (either case) into out.
func decodeHex32(s string, out *[32]byte) bool {
	if len(s) != 64 {
		return false
	}
	for i := range 32 {
		hi, lo := s[2*i], s[2*i+1]
		if !isHex(hi) || !isHex(lo) {
			return false
		}
		out[i] = unhex(hi)<<4 | unhex(lo)
	}
	return true
}

// bearerToken returns the token of an Authorization header: the credentials after a
// "Bearer" scheme, or the whole value when it has no scheme and looks like a compact JWT.
func bearerToken(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	if strings.IndexByte(v, ' ') < 0 && strings.Count(v, ".") == 2 {
		return v
	}
	return ""
}

// trimSpace drops spaces and tabs at both ends (strings.Trim with a cutset builds the set
// on every call).
func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
