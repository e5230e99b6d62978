package enforcer

import (
	"strings"
)

// eachPair splits s on sep into name=value pairs and calls fn for each until it returns
// false. A part without "=" has an empty value. With trim, spaces and tabs around each part
// are dropped (cookies: "a=1; b=2").
func eachPair(s string, sep byte, trim bool, fn func(name, value string) bool) {
	for len(s) > 0 {
		part := s
		if i := strings.IndexByte(s, sep); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		if trim {
			part = trimSpace(part)
		}
		if part == "" {
			continue
		}
		name, value, _ := strings.Cut(part, "=")
		if !fn(name, value) {
			return
		}
	}
}

// queryUnescape decodes a query argument as ngx.decode_args does: "+" is a space, %XX a
// byte, and a malformed escape stays as it is. It allocates only when there is something to
// decode.
func queryUnescape(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
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
	return string(b)
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
