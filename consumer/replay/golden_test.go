package replay_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/internal/fixture"
	"github.com/blockwire/blockwire/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenHistory is a short story: a block, an extension, a refusal, a
// manual block, an unblock, and a message that is not an incident.
func goldenHistory() []fixture.Item {
	d := func(s int64) *int64 { return &s }
	inc := func(id string, typ schemas.IncidentType, dur *int64, es ...schemas.Entity) *schemas.Incident {
		return &schemas.Incident{ID: id, Type: typ, Title: "golden " + id, DurationSeconds: dur, Entities: es}
	}
	ip := schemas.Entity{Type: schemas.EntityIP, Value: "203.0.113.7"}
	key := schemas.Entity{Type: schemas.EntityHeader, Name: "X-Api-Key", Value: "k-123"}
	return []fixture.Item{
		{Incident: inc("g-1", schemas.TypeBlock, d(600), ip, key), Source: schemas.SourceWebhook},
		{Incident: inc("g-2", schemas.TypeIncident, d(3600), ip, schemas.Entity{Type: schemas.EntityIP, Value: "127.0.0.1"}), Source: schemas.SourceWebhook},
		{Incident: inc("g-3", schemas.TypeBlock, d(7200), schemas.Entity{Type: schemas.EntityJWT, Claim: "sub", Value: "user-42"}), Source: schemas.SourceManual},
		{Raw: []byte(`{"not":"an incident"}`), Source: schemas.SourceNATS},
		{Incident: inc("g-4", schemas.TypeUnblock, nil, key), Source: schemas.SourceWebhook},
	}
}

// timestamps vary from run to run; the golden files hold "<time>".
var timestamps = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

func TestReplayGolden(t *testing.T) {
	h := newHistory(t, goldenHistory(), func(c *consumer.Config) { c.Workers, c.Parallel = 1, 1 })
	for _, format := range []string{replay.FormatTable, replay.FormatCSV, replay.FormatJSONL} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			w, err := replay.NewWriter(format, &out)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.reader.Run(t.Context(), replay.Filter{}, w.Write, nil); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got := timestamps.ReplaceAllString(out.String(), "<time>")
			file := filepath.Join("testdata", "replay."+format)
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./consumer/replay -update)", err)
			}
			if format == replay.FormatJSONL {
				compareJSONLines(t, got, string(want))
				return
			}
			if format == replay.FormatTable { // column widths follow the content; compare the cells
				got, want = squeeze(got), []byte(squeeze(string(want)))
			}
			if got != string(want) {
				t.Fatalf("%s output differs from %s:\n%s", format, file, got)
			}
		})
	}
	t.Run("unknown format", func(t *testing.T) {
		if _, err := replay.NewWriter("xml", &bytes.Buffer{}); err == nil {
			t.Fatal("accepted")
		}
	})
}

func squeeze(s string) string {
	var lines []string
	for l := range strings.Lines(s) {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

// compareJSONLines compares line by line as parsed JSON, not bytes.
func compareJSONLines(t *testing.T, got, want string) {
	t.Helper()
	g, w := strings.Split(strings.TrimSpace(got), "\n"), strings.Split(strings.TrimSpace(want), "\n")
	if len(g) != len(w) {
		t.Fatalf("%d lines, want %d:\n%s", len(g), len(w), got)
	}
	for i := range g {
		var a, b any
		if err := json.Unmarshal([]byte(g[i]), &a); err != nil {
			t.Fatalf("line %d is not JSON: %v", i+1, err)
		}
		if err := json.Unmarshal([]byte(w[i]), &b); err != nil {
			t.Fatalf("golden line %d is not JSON: %v", i+1, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("line %d:\n got %s\nwant %s", i+1, g[i], w[i])
		}
	}
}
