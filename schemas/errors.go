package schemas

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalid is matched by errors.Is for every *ValidationError, so callers
// can tell "the sender's document is wrong" (HTTP 400, dead letter) from
// everything else without knowing the concrete type.
var ErrInvalid = errors.New("invalid document")

// Violation is one reason a document was refused.
type Violation struct {
	// Path is a JSON Pointer (RFC 6901) to the offending value, e.g.
	// "/entities/3/value". The document root is written "/" rather than the
	// RFC's "" so that it reads well in logs and problem responses.
	Path    string `json:"path"`
	Message string `json:"message"`
}

// ValidationError lists every violation found in a document, sorted by path
// (array indexes numerically) and without duplicates.
type ValidationError struct {
	Violations []Violation
}

// maxListed bounds Error() so that a document with thousands of bad entities
// does not produce a log line of megabytes; Violations still holds them all.
const maxListed = 10

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	for i, v := range e.Violations {
		if i == maxListed {
			b.WriteString("; and ")
			b.WriteString(strconv.Itoa(len(e.Violations) - maxListed))
			b.WriteString(" more")
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(v.Path)
		b.WriteString(": ")
		b.WriteString(v.Message)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// newValidationError sorts and deduplicates vs; it returns nil when vs is
// empty so that callers can return its result directly.
func newValidationError(vs []Violation) error {
	if len(vs) == 0 {
		return nil
	}
	slices.SortFunc(vs, compareViolations)
	vs = slices.Compact(vs)
	return &ValidationError{Violations: vs}
}

func compareViolations(a, b Violation) int {
	if c := comparePointers(a.Path, b.Path); c != 0 {
		return c
	}
	return strings.Compare(a.Message, b.Message)
}

// comparePointers orders JSON Pointers token by token, numeric tokens by
// value, so "/entities/2" sorts before "/entities/10".
func comparePointers(a, b string) int {
	for {
		if a == b {
			return 0
		}
		ta, ra, moreA := nextToken(a)
		tb, rb, moreB := nextToken(b)
		if !moreA || !moreB {
			return cmp.Compare(a, b) // one is a prefix of the other
		}
		if ta != tb {
			na, errA := strconv.ParseUint(ta, 10, 64)
			nb, errB := strconv.ParseUint(tb, 10, 64)
			if errA == nil && errB == nil {
				return cmp.Compare(na, nb)
			}
			return strings.Compare(ta, tb)
		}
		a, b = ra, rb
	}
}

// nextToken splits "/tok/rest" into "tok" and "/rest".
func nextToken(p string) (tok, rest string, ok bool) {
	if len(p) < 2 || p[0] != '/' {
		return "", "", false
	}
	p = p[1:]
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i:], true
	}
	return p, "", true
}

// pointer builds a JSON Pointer from tokens, escaping "~" and "/" as RFC 6901
// requires; the root is "/" (see Violation.Path).
func pointer(tokens []string) string {
	if len(tokens) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapeToken(t))
	}
	return b.String()
}

// appendPointer adds one token to a pointer made by pointer.
func appendPointer(p, tok string) string {
	if p == "/" {
		p = ""
	}
	return p + "/" + escapeToken(tok)
}

func escapeToken(t string) string {
	if !strings.ContainsAny(t, "~/") {
		return t
	}
	return strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
}
