package compose

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ---- the operator documents must name what the code has ----

func readDoc(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDocsListEverySetting: docs/OPERATIONS.md lists every serve flag and docs/KONG.md every
// BLOCKWIRE_* variable the plugin reads, so a new or renamed setting cannot go undocumented.
func TestDocsListEverySetting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/blockwire")
	}
	flags, err := serveFlags()
	if err != nil {
		t.Fatal(err)
	}
	ops := readDoc(t, "OPERATIONS.md")
	for f := range flags {
		if f == "help" {
			continue
		}
		if !strings.Contains(ops, "`--"+f+"`") {
			t.Errorf("docs/OPERATIONS.md does not list serve's --%s", f)
		}
	}
	kong := readDoc(t, "KONG.md")
	for name := range pluginEnvNames(t) {
		if !strings.Contains(kong, "`"+name+"`") {
			t.Errorf("docs/KONG.md does not list %s, which the plugin reads", name)
		}
	}
}

var (
	metricOpts = regexp.MustCompile(`(?s)(?:Counter|Gauge|Histogram|Summary)Opts\{(.*?)\}`)
	optField   = func(f string) *regexp.Regexp { return regexp.MustCompile(f + `:\s*"([a-z0-9_]+)"`) }
	descName   = regexp.MustCompile(`NewDesc\(\s*"([a-z0-9_]+)"\s*,`)
	descPrefix = regexp.MustCompile(`NewDesc\(\s*"([a-z0-9_]+_)"\s*\+`)
	descHelper = regexp.MustCompile(`\bd\(\s*"([a-z0-9_]+)"\s*,`)
)

// codeMetrics finds the Prometheus metric names declared in the non-test Go files of dirs:
// {Counter,Gauge,Histogram}Opts with Namespace/Subsystem/Name, and NewDesc names (a literal,
// or a literal prefix completed by a helper d("name", ...)).
func codeMetrics(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	found := map[string]string{} // name -> file
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			src := string(data)
			for _, m := range metricOpts.FindAllStringSubmatch(src, -1) {
				var parts []string
				for _, field := range []string{"Namespace", "Subsystem", "Name"} {
					if v := optField(field).FindStringSubmatch(m[1]); v != nil {
						parts = append(parts, v[1])
					}
				}
				if len(parts) > 0 {
					found[strings.Join(parts, "_")] = f
				}
			}
			for _, m := range descName.FindAllStringSubmatch(src, -1) {
				found[m[1]] = f
			}
			if p := descPrefix.FindStringSubmatch(src); p != nil {
				for _, m := range descHelper.FindAllStringSubmatch(src, -1) {
					found[p[1]+m[1]] = f
				}
			}
		}
	}
	return found
}

// TestDocsListEveryMetric: docs/OPERATIONS.md names every metric blockwire, the plugin and the
// Kong sync export.
func TestDocsListEveryMetric(t *testing.T) {
	metrics := codeMetrics(t, "webhook", "consumer", "enforcer", "kongsync")
	for _, want := range []string{"blockwire_webhook_requests_total", "blockwire_consumer_pending", "blockwire_blocks_active"} {
		if _, ok := metrics[want]; !ok {
			t.Fatalf("found no %s in the code: the metric parser is out of date (found %v)", want, metrics)
		}
	}
	names := slices.Sorted(maps.Keys(metrics))
	t.Logf("metrics in the code: %v", names)
	ops := readDoc(t, "OPERATIONS.md")
	for _, name := range names {
		file := metrics[name]
		if !strings.Contains(ops, "`"+name+"`") {
			t.Errorf("docs/OPERATIONS.md does not list %s (declared in %s)", name, file)
		}
	}
}
