package schemas

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadKey is wrapped by every error of ParseBlockKey and BlockKey.
var ErrBadKey = errors.New("bad block key")

// MaxKeyLength bounds an encoded block key. NATS has no hard limit on
// subject length, but long subjects cost on every message and in every
// index; a caller with a longer value should store its SHA-256 instead.
const MaxKeyLength = 4096

// emptyToken stands for an empty component. "=" is always escaped inside
// other tokens, so it cannot be confused with an encoded component.
const emptyToken = "="

// KeyParts are the components of a block key (see the package doc).
type KeyParts struct {
	Kind    EntityType
	Service string // Kong service; "" when the block applies everywhere
	Route   string // Kong route; "" when not limited to a route
	Name    string // header/cookie/query name or jwt claim; "" otherwise
	Value   string // canonical value, or the hex SHA-256 for secrets
}

// BlockKey encodes k as a key of the noname_blocks bucket. It is
// deterministic, and ParseBlockKey inverts it exactly.
func BlockKey(k KeyParts) (string, error) {
	if !k.Kind.Valid() {
		return "", fmt.Errorf("%w: unknown kind %q", ErrBadKey, k.Kind)
	}
	var b strings.Builder
	b.Grow(len(k.Kind) + len(k.Service) + len(k.Route) + len(k.Name) + len(k.Value) + 8)
	b.WriteString(string(k.Kind))
	for _, c := range [...]string{k.Service, k.Route, k.Name, k.Value} {
		b.WriteByte('.')
		encodeToken(&b, c)
	}
	if b.Len() > MaxKeyLength {
		return "", fmt.Errorf("%w: encoded key is %d bytes, more than %d; hash long values", ErrBadKey, b.Len(), MaxKeyLength)
	}
	return b.String(), nil
}

// ParseBlockKey decodes a key made by BlockKey. Anything BlockKey could not
// have produced is refused with an error wrapping ErrBadKey, so that two
// different keys never name the same block.
func ParseBlockKey(key string) (KeyParts, error) {
	if len(key) > MaxKeyLength {
		return KeyParts{}, fmt.Errorf("%w: %d bytes, more than %d", ErrBadKey, len(key), MaxKeyLength)
	}
	tokens := strings.Split(key, ".")
	if len(tokens) != 5 {
		return KeyParts{}, fmt.Errorf("%w: want 5 dot-separated tokens, got %d", ErrBadKey, len(tokens))
	}
	kind := EntityType(tokens[0])
	if !kind.Valid() {
		return KeyParts{}, fmt.Errorf("%w: unknown kind %q", ErrBadKey, tokens[0])
	}
	var parts [4]string
	for i, tok := range tokens[1:] {
		s, err := decodeToken(tok)
		if err != nil {
			return KeyParts{}, fmt.Errorf("%w: token %d: %w", ErrBadKey, i+2, err)
		}
		parts[i] = s
	}
	return KeyParts{Kind: kind, Service: parts[0], Route: parts[1], Name: parts[2], Value: parts[3]}, nil
}

// passThrough reports whether a byte stands for itself in a key token.
func passThrough(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
}

const upperHex = "0123456789ABCDEF"

func encodeToken(b *strings.Builder, s string) {
	if s == "" {
		b.WriteString(emptyToken)
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if passThrough(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0x0f])
	}
}

func decodeToken(tok string) (string, error) {
	switch tok {
	case "":
		return "", errors.New("empty token")
	case emptyToken:
		return "", nil
	}
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if passThrough(c) {
			b.WriteByte(c)
			continue
		}
		if c != '_' {
			return "", fmt.Errorf("byte %q at %d is neither allowed nor escaped", c, i)
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("truncated escape at %d", i)
		}
		hi, okHi := unhex(tok[i+1])
		lo, okLo := unhex(tok[i+2])
		if !okHi || !okLo {
			return "", fmt.Errorf("escape %q at %d is not two uppercase hex digits", tok[i:i+3], i)
		}
		v := hi<<4 | lo
		if passThrough(v) {
			return "", fmt.Errorf("escape %q at %d encodes %q, which must be written as itself", tok[i:i+3], i, v)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

// unhex accepts only uppercase digits: with lowercase accepted too, one
// byte would have two encodings.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
