package enforcer

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/blockwire/blockwire/schemas"
)

// maxClaimsBuf bounds the stack buffer a token's payload is decoded into; larger payloads
// are decoded into the heap.
const maxClaimsBuf = 2048

// matchClaims checks the top-level claims of the token's payload that have blocks under
// their name, with values as blockwire stores jwt-by-claim blocks (consumer.claimValue):
// strings as they are, numbers as Go prints a float64; other value types never match. The
// signature is not verified: the enforcer blocks what it sees, it does not authenticate.
//
// A hand-written scan, not encoding/json: the claims of a typical token are checked in well
// under a microsecond, and without building a map of every claim. No func values: they
// would make the stack buffer escape to the heap.
func (m *matcher) matchClaims(tok string) bool {
	i := strings.IndexByte(tok, '.')
	if i < 0 {
		return false
	}
	rest := tok[i+1:]
	j := strings.IndexByte(rest, '.')
	if j < 0 {
		return false
	}
	payload := strings.TrimRight(rest[:j], "=")
	n := base64.RawURLEncoding.DecodedLen(len(payload))
	var stack [maxClaimsBuf]byte
	buf := stack[:]
	if n > len(stack) {
		buf = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(buf[:n], unsafe.Slice(unsafe.StringData(payload), len(payload)))
	if err != nil {
		return false
	}
	s := jsonScanner{b: buf[:n]}
	if !s.eat('{') || s.eat('}') {
		return false
	}
	for {
		s.ws()
		key, esc, ok := s.str()
		if !ok || !s.eat(':') {
			return false
		}
		name := bytesString(key)
		if esc || !utf8.Valid(key) {
			name = unescapeJSON(key)
		}
		ns, wanted := m.p.claims.get(name)
		s.ws()
		switch {
		case !wanted || s.i >= len(s.b):
			if !s.skip() {
				return false
			}
		case s.b[s.i] == '"':
			raw, esc, ok := s.str()
			if !ok {
				return false
			}
			v := bytesString(raw)
			if esc || !utf8.Valid(raw) {
				v = unescapeJSON(raw)
			}
			if m.claimBlocks(ns, v) {
				return true
			}
		case s.b[s.i] == '-' || s.b[s.i] >= '0' && s.b[s.i] <= '9':
			start := s.i
			for s.i < len(s.b) && strings.IndexByte("+-.eE0123456789", s.b[s.i]) >= 0 {
				s.i++
			}
			f, err := strconv.ParseFloat(bytesString(s.b[start:s.i]), 64)
			if err != nil {
				return false
			}
			var num [32]byte
			if m.claimBlocks(ns, bytesString(strconv.AppendFloat(num[:0], f, 'g', -1, 64))) {
				return true
			}
		default:
			if !s.skip() {
				return false
			}
		}
		if !s.eat(',') {
			return false // '}' or malformed: either way, done
		}
	}
}

func (m *matcher) claimBlocks(ns uint32, v string) bool {
	r, ok := m.x.lookupStr(ns, v)
	return ok && m.note(r, schemas.EntityJWT)
}

// bytesString views b as a string without copying; b must not change while it is used.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// jsonScanner walks just enough JSON to find an object's members.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *jsonScanner) eat(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string at the cursor and returns its raw content, whether it has escapes,
// and whether it was well formed.
func (s *jsonScanner) str() ([]byte, bool, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	esc := false
	for i := start; i < len(s.b); i++ {
		switch s.b[i] {
		case '\\':
			esc = true
			i++
		case '"':
			s.i = i + 1
			return s.b[start:i], esc, true
		}
	}
	return nil, false, false
}

// skip consumes one value of any type.
func (s *jsonScanner) skip() bool {
	s.ws()
	depth := 0
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case '"':
			if _, _, ok := s.str(); !ok {
				return false
			}
			if depth == 0 {
				return true
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return true // the end of the enclosing object or array
			}
			depth--
			if depth == 0 {
				s.i++
				return true
			}
		case ',':
			if depth == 0 {
				return true
			}
		default:
			if depth == 0 && (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				return true
			}
		}
		s.i++
	}
	return depth == 0
}

// unescapeJSON decodes the escapes of a JSON string's content; invalid escapes, lone
// surrogates and each byte of invalid UTF-8 become U+FFFD, as encoding/json does (and so the
// consumer, which derives the blocks).
func unescapeJSON(raw []byte) string {
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && n == 1 {
				b.WriteRune(utf8.RuneError)
			} else {
				b.Write(raw[i : i+n])
			}
			i += n - 1
			continue
		}
		if c != '\\' || i+1 >= len(raw) {
			b.WriteByte(c)
			continue
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			b.WriteByte(raw[i])
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, n := hex4(raw[i+1:])
			i += n
			if utf16.IsSurrogate(r) {
				r2, n2 := rune(-1), 0
				if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2, n2 = hex4(raw[i+3:])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 2 + n2
				} else {
					r = utf8.RuneError
				}
			}
			b.WriteRune(r)
		default:
			b.WriteRune(utf8.RuneError)
		}
	}
	return b.String()
}

// hex4 reads four hex digits; it returns U+FFFD and 0 when they are not there.
func hex4(b []byte) (rune, int) {
	if len(b) < 4 {
		return utf8.RuneError, 0
	}
	var r rune
	for _, c := range b[:4] {
		if !isHex(c) {
			return utf8.RuneError, 0
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, 4
}
