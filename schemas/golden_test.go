package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/incidents/invalid.golden.json from the current output")

const (
	incidentsDir = "../testdata/incidents"
	goldenFile   = incidentsDir + "/invalid.golden.json"
)

// readDir returns name → content of every *.json file in a testdata folder.
func readDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(incidentsDir, dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no files in %s/%s", incidentsDir, dir)
	}
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

func TestValidIncidents(t *testing.T) {
	for name, data := range readDir(t, "valid") {
		t.Run(name, func(t *testing.T) {
			inc, err := ParseIncident(data)
			if err != nil {
				t.Fatalf("ParseIncident: %v", err)
			}
			if inc.ID == "" || len(inc.Entities) == 0 || inc.Type == "" {
				t.Fatalf("decoded incident lacks id, entities or type: %+v", inc)
			}
		})
	}
}

// TestValidIncidentsCoverEveryKind keeps the valid set honest: each entity
// type and incident type must appear at least once.
func TestValidIncidentsCoverEveryKind(t *testing.T) {
	seen := map[string]bool{}
	for _, data := range readDir(t, "valid") {
		inc, err := ParseIncident(data)
		if err != nil {
			continue // reported by TestValidIncidents
		}
		seen["type:"+string(inc.Type)] = true
		for _, e := range inc.Entities {
			seen["entity:"+string(e.Type)] = true
			if e.Type == EntityJWT && e.Claim == "" {
				seen["entity:jwt-token"] = true
			}
		}
	}
	want := []string{"type:incident", "type:block", "type:unblock", "entity:jwt-token"}
	for _, et := range EntityTypes() {
		want = append(want, "entity:"+string(et))
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no valid incident has %s", w)
		}
	}
}

// TestInvalidIncidents compares the violations of every invalid file with
// the golden file, as parsed JSON. Run `go test ./schemas -update` after a
// deliberate change and review the diff by hand.
func TestInvalidIncidents(t *testing.T) {
	got := map[string][]Violation{}
	for name, data := range readDir(t, "invalid") {
		_, err := ParseIncident(data)
		var verr *ValidationError
		if !errors.As(err, &verr) {
			t.Errorf("%s: want a *ValidationError, got %v", name, err)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: errors.Is(err, ErrInvalid) is false", name)
		}
		if len(verr.Violations) == 0 {
			t.Errorf("%s: no violations", name)
		}
		got[name] = verr.Violations
	}
	if *update {
		writeGolden(t, got)
		return
	}
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("%v (run go test ./schemas -update to create it)", err)
	}
	var want map[string][]Violation
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("golden file: %v", err)
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("golden file lists %s, which is not in invalid/", name)
		}
	}
	for name, vs := range got {
		if !reflect.DeepEqual(vs, want[name]) {
			t.Errorf("%s:\n got  %s\n want %s", name, show(vs), show(want[name]))
		}
	}
}

func writeGolden(t *testing.T, got map[string][]Violation) {
	t.Helper()
	// encoding/json sorts map keys, so the file is stable; HTML escaping
	// is off so that messages read as they are ("&", not "\u0026").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenFile, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", goldenFile)
}

func show(vs []Violation) string {
	lines := make([]string, len(vs))
	for i, v := range vs {
		lines[i] = v.Path + ": " + v.Message
	}
	sort.Strings(lines)
	return "[" + strings.Join(lines, " | ") + "]"
}
