package kongfake

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// Kong's error codes (kong/db/errors.lua) for the cases the fake reproduces.
const (
	codeSchemaViolation    = 2
	codeForeignKey         = 4
	codeUniqueViolation    = 5
	codeInvalidOffset      = 7
	codeInvalidOptions     = 11
	codeReferencedByOthers = 19
)

// kongError is an Admin API error answer: {code, name, message, fields}, as Kong sends it.
type kongError struct {
	status int
	code   int
	name   string
	msg    string
	fields map[string]any
	// schema marks a request Kong refuses for its content (schema violations, unknown fields):
	// a client that sends one has a bug, so the fake fails the test unless told otherwise.
	schema bool
}

func (e *kongError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func (e *kongError) body() map[string]any {
	b := map[string]any{"message": e.msg}
	if e.code != 0 {
		b["code"] = e.code
		b["name"] = e.name
	}
	if e.fields != nil {
		b["fields"] = e.fields
	}
	return b
}

// schemaViolation builds Kong's 400 for field errors: fields maps a field (dotted for config,
// e.g. "config.deny") to its message; entityErr is an entity-level check's message, if any.
func schemaViolation(fields map[string]string, entityErr string) *kongError {
	nested := map[string]any{}
	var parts []string
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+": "+fields[k])
		setNested(nested, strings.Split(k, "."), fields[k])
	}
	if entityErr != "" {
		nested["@entity"] = []string{entityErr}
		parts = append(parts, entityErr)
	}
	msg := "schema violation (" + strings.Join(parts, "; ") + ")"
	if len(parts) > 1 {
		msg = fmt.Sprintf("%d schema violations (%s)", len(parts), strings.Join(parts, "; "))
	}
	return &kongError{status: http.StatusBadRequest, code: codeSchemaViolation, name: "schema violation",
		msg: msg, fields: nested, schema: true}
}

func setNested(m map[string]any, path []string, msg string) {
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[path[len(path)-1]] = msg
}

func notFound() *kongError {
	return &kongError{status: http.StatusNotFound, msg: "Not found"}
}

func uniqueViolation(what string) *kongError {
	return &kongError{status: http.StatusConflict, code: codeUniqueViolation, name: "unique constraint violation",
		msg: "UNIQUE violation detected on '" + what + "'"}
}

func foreignKeyViolation(field, entity, ref string) *kongError {
	return &kongError{status: http.StatusBadRequest, code: codeForeignKey, name: "foreign key violation",
		msg:    fmt.Sprintf("the foreign key '{id=%q}' does not reference an existing '%s' entity.", ref, entity),
		fields: map[string]any{field: fmt.Sprintf("the foreign key '{id=%q}' does not reference an existing '%s' entity.", ref, entity)}}
}

func invalidOffset(v string) *kongError {
	return &kongError{status: http.StatusBadRequest, code: codeInvalidOffset, name: "invalid offset",
		msg: fmt.Sprintf("'%s' is not a valid offset: bad base64 encoding", v)}
}

func invalidOptions(msg string) *kongError {
	return &kongError{status: http.StatusBadRequest, code: codeInvalidOptions, name: "invalid options",
		msg: "invalid option (" + msg + ")"}
}
