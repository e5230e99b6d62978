package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Limits of an incident, also enforced by the schema (MaxEntities,
// MaxIDLength) or before it (MaxDepth).
const (
	// MaxDepth bounds the nesting of arrays and objects. A valid incident
	// nests 3 deep; the bound only has to stop JSON bombs before decoding.
	MaxDepth    = 32
	MaxEntities = 1000
	MaxIDLength = 128
)

// ParseIncident checks an incident document and decodes it. The checks run
// in order of cost, each stopping the next when it fails: nesting depth (a
// byte scan, so "[[[[…" costs nothing), JSON syntax, then the schema and the
// semantic checks together so that one answer lists every problem. The
// error is a *ValidationError (errors.Is(err, ErrInvalid)) when the document
// is at fault, anything else only if the embedded schemas fail to compile.
// A missing "type" is returned as TypeIncident.
func ParseIncident(data []byte) (*Incident, error) {
	doc, err := validate(data, incidentDoc())
	if err != nil {
		return nil, err
	}
	inc := toIncident(doc)
	if inc.Type == "" {
		inc.Type = TypeIncident
	}
	return inc, nil
}

// ValidateBlock checks a block (a value of the noname_blocks bucket) and
// decodes it.
func ValidateBlock(data []byte) (*Block, error) {
	doc, err := validate(data, blockDoc())
	if err != nil {
		return nil, err
	}
	return toBlock(doc), nil
}

// ValidateAudit checks an audit record and decodes it.
func ValidateAudit(data []byte) (*AuditRecord, error) {
	doc, err := validate(data, auditDoc())
	if err != nil {
		return nil, err
	}
	return toAudit(doc), nil
}

// docKind is what validate needs to know about one kind of document.
type docKind struct {
	schema func(*compiled) *jsonschema.Schema
	// fits, if not nil, is a fast equivalent of the schema that lets valid
	// documents skip the real validator (see fastpath.go).
	fits func(any) bool
	// semantic adds the violations the schema cannot express.
	semantic func(doc any, vs []Violation) []Violation
	// tame, if not nil, takes out of the document what would make the real
	// validator slow, reporting it (see tameNumbers).
	tame func(doc any, vs []Violation) []Violation
}

// The kinds are functions rather than package variables so that no code
// can swap a check out from under concurrent callers.

func incidentDoc() docKind {
	return docKind{func(c *compiled) *jsonschema.Schema { return c.incident }, incidentFitsSchema, checkIncident, tameIncident}
}

func blockDoc() docKind {
	return docKind{func(c *compiled) *jsonschema.Schema { return c.block }, nil, checkBlock, nil}
}

func auditDoc() docKind {
	return docKind{func(c *compiled) *jsonschema.Schema { return c.audit }, nil, checkAudit, tameAudit}
}

// validate runs the checks shared by every document type and returns the
// generic decoded document, which fits the schema when err is nil.
func validate(data []byte, k docKind) (any, error) {
	set, err := schemaSet()
	if err != nil {
		return nil, err
	}
	if depthExceeds(data, MaxDepth) {
		return nil, invalidAt("/", fmt.Sprintf("nesting is too deep: more than %d levels of arrays and objects", MaxDepth))
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, so two
	// different bodies could name one incident; the stored bytes must be text.
	if !utf8.Valid(data) {
		return nil, invalidAt("/", "the body is not valid UTF-8")
	}
	doc, err := decodeGeneric(data)
	if err != nil {
		return nil, invalidAt("/", err.Error())
	}
	if path, dup := duplicateMember(data); dup {
		return nil, invalidAt(path, "this member appears twice in its object; readers disagree on which one counts, so the document is refused")
	}
	var vs []Violation
	if k.fits == nil || !k.fits(doc) {
		if k.tame != nil {
			vs = k.tame(doc, vs)
		}
		if err := k.schema(set).Validate(doc); err != nil {
			var verr *jsonschema.ValidationError
			if !errors.As(err, &verr) {
				return nil, fmt.Errorf("schemas: validate: %w", err)
			}
			vs = schemaViolations(verr, set.messages, vs)
		}
	}
	vs = k.semantic(doc, vs)
	if err := newValidationError(vs); err != nil {
		return nil, err
	}
	return doc, nil
}

func tameIncident(doc any, vs []Violation) []Violation {
	vs = tameNumbers(doc, []string{"durationSeconds"}, vs)
	// Past MaxEntities the document is refused anyway; checking each of
	// 100000 entities would only make a hostile body expensive.
	if obj, ok := doc.(map[string]any); ok {
		if ents, ok := obj["entities"].([]any); ok && len(ents) > MaxEntities {
			obj["entities"] = ents[:MaxEntities]
			vs = append(vs, Violation{Path: "/entities", Message: fmt.Sprintf("must have at most %d items, not %d", MaxEntities, len(ents))})
		}
	}
	return vs
}

func tameAudit(doc any, vs []Violation) []Violation {
	return tameNumbers(doc, []string{"eventSeq"}, vs)
}

// tameNumbers takes out of doc the integer properties whose literal is
// absurd (1e999999), reporting them. The validator compares numbers as
// math/big rationals, and expanding such a literal takes a tenth of a
// second: cheap to send, dear to check.
func tameNumbers(doc any, keys []string, vs []Violation) []Violation {
	obj, ok := doc.(map[string]any)
	if !ok {
		return vs
	}
	for _, key := range keys {
		if n, ok := obj[key].(json.Number); ok && !saneNumber(string(n)) {
			delete(obj, key) // doc is ours and is discarded on error
			vs = append(vs, Violation{Path: "/" + key, Message: "number is out of range"})
		}
	}
	return vs
}

// saneNumber bounds a JSON number literal: no integer the schemas allow
// needs more than 32 characters or an exponent beyond ±30.
func saneNumber(lit string) bool {
	if len(lit) > 32 {
		return false
	}
	i := strings.IndexAny(lit, "eE")
	if i < 0 {
		return true
	}
	exp, err := strconv.Atoi(lit[i+1:])
	return err == nil && exp >= -30 && exp <= 30
}

func invalidAt(path, msg string) error {
	return &ValidationError{Violations: []Violation{{Path: path, Message: msg}}}
}

// decodeGeneric decodes data into the generic form the schema validator
// needs (json.Number for numbers, so integers stay exact), and words syntax
// errors with their byte offset.
func decodeGeneric(data []byte) (any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty body: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("invalid JSON at byte offset %d: %s", syn.Offset, syn.Error())
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("invalid JSON at byte offset %d: unexpected end of input", len(data))
		}
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	off := dec.InputOffset()
	if rest := bytes.TrimLeft(data[off:], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("invalid JSON at byte offset %d: unexpected data after the top-level value", len(data)-len(rest))
	}
	return doc, nil
}

// depthExceeds reports whether data nests arrays and objects more than max
// deep. It only counts brackets outside strings and stops at the first
// excess, so it is linear, allocation-free and quick to refuse a bomb; it
// does not check syntax (the decoder does that next).
func depthExceeds(data []byte, max int) bool {
	depth := 0
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++ // skip the escaped byte, which may be a quote
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > max {
				return true
			}
		case ']', '}':
			depth--
		}
	}
	return false
}
