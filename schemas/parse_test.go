package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// wantViolations asserts that err is a *ValidationError with exactly want.
func wantViolations(t *testing.T, err error, want ...Violation) {
	t.Helper()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	if show(verr.Violations) != show(want) {
		t.Fatalf("violations:\n got  %s\n want %s", show(verr.Violations), show(want))
	}
}

func TestParseIncidentDecodes(t *testing.T) {
	data := []byte(`{"id":"i-1","title":"t","severity":"high","status":"Open",
		"detectionTime":"2024-05-01T12:03:44.5+02:00","api":{"host":"h","path":"/p","method":"GET","extra":1},
		"entities":[{"type":"header","name":"X-K","value":"v"},{"type":"jwt","claim":"sub","value":"u"}],
		"durationSeconds":60,"scope":{"route":"r"},"unknown":{"a":[1,2]}}`)
	inc, err := ParseIncident(data)
	if err != nil {
		t.Fatal(err)
	}
	dur := int64(60)
	want := &Incident{
		ID: "i-1", Type: TypeIncident, Title: "t", Severity: SeverityHigh, Status: "Open",
		DetectionTime:   time.Date(2024, 5, 1, 12, 3, 44, 5e8, time.FixedZone("", 2*3600)),
		API:             &API{Host: "h", Path: "/p", Method: "GET"},
		Entities:        []Entity{{Type: EntityHeader, Name: "X-K", Value: "v"}, {Type: EntityJWT, Claim: "sub", Value: "u"}},
		DurationSeconds: &dur,
		Scope:           &Scope{Route: "r"},
	}
	// The pointer fields are compared by what they point to.
	if !inc.DetectionTime.Equal(want.DetectionTime) || inc.ID != want.ID || inc.Type != want.Type ||
		len(inc.Entities) != 2 || inc.Entities[0] != want.Entities[0] || inc.Entities[1] != want.Entities[1] ||
		inc.API == nil || *inc.API != *want.API || inc.Scope == nil || *inc.Scope != *want.Scope ||
		inc.DurationSeconds == nil || *inc.DurationSeconds != 60 ||
		inc.Title != "t" || inc.Severity != SeverityHigh || inc.Status != "Open" {
		t.Fatalf("got  %+v\nwant %+v", *inc, *want)
	}
	if inc.EffectiveType() != TypeIncident {
		t.Fatalf("EffectiveType = %q", inc.EffectiveType())
	}
	if (&Incident{}).EffectiveType() != TypeIncident || (&Incident{Type: TypeUnblock}).EffectiveType() != TypeUnblock {
		t.Fatal("EffectiveType does not default to incident")
	}
}

// TestParseIncidentExactKeys guards against encoding/json's case-insensitive
// key matching: an unknown "Entities" must not replace "entities".
func TestParseIncidentExactKeys(t *testing.T) {
	inc, err := ParseIncident([]byte(`{"id":"good","entities":[{"type":"ip","value":"192.0.2.1"}],
		"ID":"evil","Entities":[{"type":"ip","value":"not validated"}],"Type":"nuke","DurationSeconds":-1}`))
	if err != nil {
		t.Fatal(err)
	}
	if inc.ID != "good" || len(inc.Entities) != 1 || inc.Entities[0].Value != "192.0.2.1" || inc.Type != TypeIncident || inc.DurationSeconds != nil {
		t.Fatalf("decoded an unvalidated field: %+v", inc)
	}
}

func TestParseIncidentDepth(t *testing.T) {
	inner := func(levels int) []byte {
		// The root object is one level, so levels-1 arrays make it levels deep.
		return []byte(`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"x":` +
			strings.Repeat("[", levels-1) + strings.Repeat("]", levels-1) + `}`)
	}
	if _, err := ParseIncident(inner(MaxDepth)); err != nil {
		t.Fatalf("depth %d refused: %v", MaxDepth, err)
	}
	tooDeep := Violation{Path: "/", Message: "nesting is too deep: more than 32 levels of arrays and objects"}
	_, err := ParseIncident(inner(MaxDepth + 1))
	wantViolations(t, err, tooDeep)
	// Brackets inside strings, escaped quotes included, do not count.
	_, err = ParseIncident([]byte(`{"id":"[[[[\"[[[[` + strings.Repeat("[", 100) + `","entities":[{"type":"ip","value":"192.0.2.1"}]}`))
	if err != nil {
		t.Fatalf("brackets in a string counted: %v", err)
	}
}

// TestDepthBombIsCheap: a 1 MiB bracket bomb must be refused in
// microseconds, before any decoding.
func TestDepthBombIsCheap(t *testing.T) {
	bomb := bytes.Repeat([]byte("["), 1<<20)
	res := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseIncident(bomb); err == nil {
				b.Fatal("bomb accepted")
			}
		}
	})
	if per := time.Duration(res.NsPerOp()); per > 50*time.Microsecond {
		t.Fatalf("refusing a 1 MiB bomb took %v per call", per)
	}
}

// TestHostileNumbersAreCheap: the validator expands numbers as math/big
// rationals, so absurd literals must be refused before it sees them.
func TestHostileNumbersAreCheap(t *testing.T) {
	for _, n := range []string{"1e999999", "123456789012345678901234567890e-999999", "0.0000000000000001e1000000"} {
		start := time.Now()
		_, err := ParseIncident([]byte(`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":` + n + `}`))
		wantViolations(t, err, Violation{"/durationSeconds", "number is out of range"})
		if d := time.Since(start); d > 20*time.Millisecond {
			t.Errorf("%s took %v", n, d)
		}
	}
	_, err := ValidateAudit([]byte(`{"time":"2024-05-01T12:00:00Z","action":"blocked","eventSeq":1e999999}`))
	wantViolations(t, err, Violation{"/eventSeq", "number is out of range"})
}

func TestValidationErrorMessage(t *testing.T) {
	var vs []Violation
	for i := range 12 {
		vs = append(vs, Violation{Path: fmt.Sprintf("/entities/%d/value", i), Message: "bad"})
	}
	vs = append(vs, vs[3], Violation{Path: "/", Message: "root"})
	err := newValidationError(vs)
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Violations) != 13 {
		t.Fatalf("want 13 deduplicated violations, got %v", err)
	}
	if verr.Violations[0].Path != "/" || verr.Violations[3].Path != "/entities/2/value" || verr.Violations[12].Path != "/entities/11/value" {
		t.Fatalf("not sorted numerically: %v", verr.Violations)
	}
	want := "invalid document: /: root; /entities/0/value: bad; /entities/1/value: bad"
	if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.HasSuffix(msg, "; and 3 more") {
		t.Fatalf("Error() = %q", msg)
	}
	if !errors.Is(fmt.Errorf("wrapped: %w", err), ErrInvalid) {
		t.Fatal("errors.Is(wrapped, ErrInvalid) is false")
	}
	if newValidationError(nil) != nil {
		t.Fatal("no violations must give a nil error")
	}
}

func TestPointerEscaping(t *testing.T) {
	tests := []struct {
		tokens []string
		want   string
	}{
		{nil, "/"},
		{[]string{"a/b", "~c", "0"}, "/a~1b/~0c/0"},
		{[]string{""}, "/"},
	}
	for _, tt := range tests {
		if got := pointer(tt.tokens); got != tt.want {
			t.Errorf("pointer(%q) = %q, want %q", tt.tokens, got, tt.want)
		}
	}
	_, err := ParseIncident([]byte(`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1","a/b~":1}]}`))
	wantViolations(t, err, Violation{Path: "/entities/0/a~1b~0", Message: "unknown property: an entity has only type, value, valueSha256, name and claim"})
}

func FuzzParseIncident(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join(incidentsDir, "*", "*.json"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no seed files: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		agreeWithSchema(t, data)
		if _, err := decodeGeneric(data); err == nil && utf8.Valid(data) && !depthExceeds(data, MaxDepth) {
			if _, dup := duplicateMember(data); dup != referenceDuplicate(data) {
				t.Fatalf("duplicateMember says %v, encoding/json's tokens say %v, for %q", dup, !dup, data)
			}
		}
		inc, err := ParseIncident(data)
		if err != nil {
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Violations) == 0 {
				t.Fatalf("error is not a non-empty *ValidationError: %v", err)
			}
			return
		}
		if inc.ID == "" || len(inc.Entities) == 0 || len(inc.Entities) > MaxEntities {
			t.Fatalf("accepted an incident without id or with %d entities", len(inc.Entities))
		}
	})
}

func BenchmarkParseIncident(b *testing.B) {
	small := []byte(`{"id":"3f6c1b2e-9d41-4c8a-b7e2-5a1d0c9e8f71","type":"block","title":"Brute force on login",
		"severity":"high","detectionTime":"2024-05-01T12:03:44Z","durationSeconds":3600,
		"entities":[{"type":"ip","value":"203.0.113.7"},{"type":"header","name":"X-API-Key","value":"sk_live_51HqLyj"},
		{"type":"jwt","claim":"sub","value":"user-8a41c2"}],"scope":{"service":"auth"}}`)
	var big bytes.Buffer
	big.WriteString(`{"id":"big","entities":[`)
	for i := range MaxEntities {
		if i > 0 {
			big.WriteByte(',')
		}
		fmt.Fprintf(&big, `{"type":"ip","value":"10.0.%d.%d"}`, i>>8, i&255)
	}
	big.WriteString(`]}`)
	for _, bc := range []struct {
		name string
		data []byte
	}{{"small", small}, {"1000-entities", big.Bytes()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseIncident(bc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
