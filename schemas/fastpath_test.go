package schemas

import (
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// agreeWithSchema fails when the fast path and the real validator disagree
// on whether data is an acceptable incident (schema and semantic checks
// together). It returns the verdict.
func agreeWithSchema(t testing.TB, data []byte) bool {
	t.Helper()
	set, err := schemaSet()
	if err != nil {
		t.Fatal(err)
	}
	if depthExceeds(data, MaxDepth) || !utf8.Valid(data) {
		return false // refused before either validator runs
	}
	doc, err := decodeGeneric(data)
	if err != nil {
		return false
	}
	fast := incidentFitsSchema(doc) && len(checkIncident(doc, nil)) == 0
	// tameIncident may edit doc, so it runs after the fast path has seen it.
	tamed := tameIncident(doc, nil)
	slow := len(tamed) == 0 && set.incident.Validate(doc) == nil && len(checkIncident(doc, nil)) == 0
	if slow != fast {
		t.Fatalf("schema says valid=%v, fast path says %v, for %q", slow, fast, data)
	}
	return fast
}

func TestFastPathAgrees(t *testing.T) {
	for _, dir := range []string{"valid", "invalid"} {
		for name, data := range readDir(t, dir) {
			t.Run(filepath.Join(dir, name), func(t *testing.T) {
				if got := agreeWithSchema(t, data); got != (dir == "valid") {
					t.Fatalf("verdict %v for a file in %s/", got, dir)
				}
			})
		}
	}
	// Boundaries the testdata does not reach.
	for _, doc := range []string{
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":1}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":31536000}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":3600.0}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":1e400}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":1e999999}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"durationSeconds":0.0000000000000000000000000000000036e36}`,
		`{"id":"i","entities":[{"type":"header","name":"a\u00e9","value":"v"}]}`,
		`{"id":"i","entities":[{"type":"cookie","name":"a\tb","value":"v"}]}`,
		`{"id":"i","entities":[{"type":"cookie","name":"a\u00a0b","value":"v"}]}`,
		`{"id":"i","entities":[{"type":"query","name":"a\u0085b","value":"v"}]}`,
		`{"id":"i\u009f","entities":[{"type":"ip","value":"192.0.2.1"}]}`,
		`{"id":"i","entities":[{"type":"jwt","claim":"","value":"v"}]}`,
		`{"id":"i","entities":[{"type":"jwt","claim":"sub","name":"x","value":"v"}]}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1","claim":null}]}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"scope":{"service":"s","route":""}}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"api":{"host":1}}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"api":[]}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"title":null}`,
		`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"}],"detectionTime":"2024-05-01T12:00:00z"}`,
	} {
		agreeWithSchema(t, []byte(doc))
	}
}
