package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// The incident stream is kept for months and read by replay, so an incident
// is stored without the secrets its entities carry (see docs/ARCHITECTURE.md,
// "Incident message"): a header, cookie or query value or a whole token by
// its SHA-256 (valueSha256, as HashSecret), a token given for a claim by the
// claim's value. Either is the form the consumer reduces the entity to
// anyway, so the block key is the same. Everything else is kept as received,
// and an incident without such an entity is stored byte for byte.

// entityRefusal is an entity that has no stored form without its secret that
// the consumer would treat as it treats the entity received.
type entityRefusal struct {
	index int
	err   error
}

func (r *entityRefusal) Error() string {
	return fmt.Sprintf("entity %d: %v", r.index, r.err)
}

// storableBody returns the body to store for an incident ParseIncident
// accepted: body itself when no entity carries a secret, else body with each
// such entity replaced by its stored form. An *entityRefusal says which
// entity cannot be stored without its secret; any other error means body
// could not be rewritten. candidates, when not nil, replaces placeholders
// (tests).
func storableBody(body []byte, inc *schemas.Incident, candidates func(schemas.Entity) []schemas.Entity) ([]byte, error) {
	var stored map[int]schemas.Entity // nil while nothing changes: the common case allocates nothing
	standIns := placeholderCache{candidates: candidates}
	for i, e := range inc.Entities {
		s, changed, err := storedForm(e, inc.Scope, &standIns)
		if err != nil {
			return nil, &entityRefusal{index: i, err: err}
		}
		if changed {
			if stored == nil {
				stored = make(map[int]schemas.Entity)
			}
			stored[i] = s
		}
	}
	if stored == nil {
		return body, nil
	}
	return replaceEntities(body, len(inc.Entities), stored)
}

// storedForm is the form in which e is stored in the incident stream, and
// whether it differs from e. The consumer derives the same block key from
// both, or refuses both for the same reason; err is set when no such form
// without the secret exists.
func storedForm(e schemas.Entity, scope *schemas.Scope, standIns *placeholderCache) (schemas.Entity, bool, error) {
	if e.Value == "" { // given by hash (or not a secret)
		return e, false, nil
	}
	switch {
	case e.Type.HasName():
		h, _ := HashSecret(e)
		return h, true, nil
	case e.Type == schemas.EntityJWT && e.Claim == "":
		h, _ := HashSecret(e)
		// The consumer refuses a value it cannot read as a token, but takes a
		// valueSha256 on trust: a refused token must not be stored as a hash.
		if _, err := consumer.KeyFor(e, scope); err != nil {
			if _, herr := consumer.KeyFor(h, scope); herr == nil || herr.Error() != err.Error() {
				return standIns.refused(e, scope, err)
			}
		}
		return h, true, nil
	case e.Type == schemas.EntityJWT:
		v, err := consumer.ClaimValue(e.Value, e.Claim)
		if err != nil {
			return standIns.refused(e, scope, err)
		}
		if v == e.Value { // not a token: already the claim's value
			return e, false, nil
		}
		e.Value = v
		return e, true, nil
	}
	return e, false, nil
}

// A placeholder stands for a token the consumer refuses: a token of no one
// that the consumer refuses with the same reason and detail, stored instead
// of the real one so the refusal survives in the log and the secret does not.
// Its header says what it is.
var (
	placeholderHeader = b64(`{"alg":"none","blockwire":"placeholder"}`)
	// Without an algorithm the token library cannot read it ("unverifiable").
	placeholderHeaderNoAlg = b64(`{"blockwire":"placeholder"}`)
	placeholderEmpty       = placeholderHeader + "." + b64(`{}`) + "."
	// Not a token to the consumer (its header is not a JSON object), though
	// shaped like one, as the contract wants of a whole token.
	placeholderNotToken = b64("placeholder") + "." + b64("placeholder") + "."
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// placeholders are the candidate stand-ins for a refused jwt entity: one per
// way the consumer refuses a token (see consumer.ClaimValue).
func placeholders(e schemas.Entity) []schemas.Entity {
	if e.Claim == "" {
		return []schemas.Entity{{Type: schemas.EntityJWT, Value: placeholderNotToken}}
	}
	claims := func(v any) string {
		b, _ := json.Marshal(map[string]any{e.Claim: v})
		return placeholderHeader + "." + b64(string(b)) + "."
	}
	values := []string{
		placeholderEmpty,         // no such claim
		claims(""),               // the claim is empty
		claims(nil),              // the claim is not a string or number
		claims(placeholderEmpty), // the claim holds a token itself
		placeholderHeader + "." + b64("placeholder") + ".", // the claims are not JSON
		placeholderHeaderNoAlg + "." + b64(`{}`) + ".",     // no signing algorithm
	}
	out := make([]schemas.Entity, len(values))
	for i, v := range values {
		out[i] = schemas.Entity{Type: schemas.EntityJWT, Claim: e.Claim, Value: v}
	}
	return out
}

// placeholderCache remembers, per claim, the placeholders and the refusal
// each one gets, so an incident of many refused tokens tries them once.
type placeholderCache struct {
	byClaim    map[string][]refusedPlaceholder
	candidates func(schemas.Entity) []schemas.Entity // nil: placeholders
}

type refusedPlaceholder struct {
	e      schemas.Entity
	reason string // the consumer's refusal, "" if it accepts it
}

// refused returns the placeholder the consumer refuses exactly as it refuses
// e (why is that refusal), or an error when none does.
func (c *placeholderCache) refused(e schemas.Entity, scope *schemas.Scope, why error) (schemas.Entity, bool, error) {
	if !errors.Is(why, consumer.ErrRefused) {
		return e, false, why
	}
	// One cache serves one incident, so one scope; whole tokens are under "".
	cands, ok := c.byClaim[e.Claim]
	if !ok {
		gen := placeholders
		if c.candidates != nil {
			gen = c.candidates
		}
		for _, p := range gen(e) {
			r := refusedPlaceholder{e: p}
			if _, err := consumer.KeyFor(p, scope); err != nil {
				r.reason = err.Error()
			}
			cands = append(cands, r)
		}
		if c.byClaim == nil {
			c.byClaim = make(map[string][]refusedPlaceholder)
		}
		c.byClaim[e.Claim] = cands
	}
	for _, p := range cands {
		if p.reason != "" && p.reason == why.Error() {
			return p.e, true, nil
		}
	}
	return e, false, why
}

// replaceEntities returns body with entity i of its "entities" array
// replaced by stored[i], re-encoded; every other byte is kept. body is a
// document ParseIncident accepted, n its number of entities.
func replaceEntities(body []byte, n int, stored map[int]schemas.Entity) ([]byte, error) {
	arr, ok := member(body, "entities")
	if !ok {
		return nil, errors.New("no entities array in the body")
	}
	elems := arrayElements(body, arr)
	if len(elems) != n {
		return nil, fmt.Errorf("found %d entities in the body, parsed %d", len(elems), n)
	}
	// One encoder for every entity, writing where the entity goes; <, > and &
	// are not escaped (the body as received need not have).
	var out bytes.Buffer
	out.Grow(len(body) + 64*len(stored))
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	last := 0
	for i, sp := range elems {
		e, ok := stored[i]
		if !ok {
			continue
		}
		out.Write(body[last:sp.start])
		if err := enc.Encode(e); err != nil {
			return nil, err
		}
		out.Truncate(out.Len() - 1) // Encode's newline
		last = sp.end
	}
	out.Write(body[last:])
	return out.Bytes(), nil
}

// span is a value's bytes in a document: body[start:end].
type span struct{ start, end int }

// The scanner below walks a document that encoding/json already accepted
// (ParseIncident), so it checks nothing and never fails on bad syntax: it
// only finds where things are.

// member returns the span of the value of the top-level member named name
// (ParseIncident refuses a name given twice).
func member(b []byte, name string) (span, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return span{}, false
	}
	i = skipSpace(b, i+1)
	for i < len(b) && b[i] == '"' {
		kEnd := skipString(b, i)
		isName := keyIs(b[i:kEnd], name)
		i = skipSpace(b, kEnd)
		i = skipSpace(b, i+1) // the colon
		vEnd := skipValue(b, i)
		if isName {
			return span{i, vEnd}, true
		}
		i = skipSpace(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return span{}, false
}

// arrayElements returns the span of each element of the array at sp.
func arrayElements(b []byte, sp span) []span {
	i := sp.start
	if i >= len(b) || b[i] != '[' {
		return nil
	}
	var out []span
	i = skipSpace(b, i+1)
	for i < sp.end && b[i] != ']' {
		end := skipValue(b, i)
		out = append(out, span{i, end})
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return out
}

// keyIs reports whether the JSON string lit (quotes included) decodes to name.
func keyIs(lit []byte, name string) bool {
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1:len(lit)-1]) == name
	}
	var s string
	return json.Unmarshal(lit, &s) == nil && s == name
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"'):
// after the first quote not escaped, one after an even run of backslashes.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		i += q
		n := 0
		for n < i && b[i-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}
