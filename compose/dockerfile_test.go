package compose

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// ---- Dockerfiles ----

type stage struct {
	from, name string
	env        map[string]string
	runs       []string
	copies     []copyInstr
}

type copyInstr struct {
	from     string // --from= stage, "" for the build context
	src, dst string
}

// parseDockerfile reads a Dockerfile line by line: continuation lines joined, comments
// dropped, FROM starting a stage, ENV, RUN and COPY kept per stage.
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages  []stage
		logical strings.Builder
		lines   []string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && logical.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		lines = append(lines, logical.String())
		logical.Reset()
	}
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		if strings.ToUpper(instr) == "FROM" {
			f := strings.Fields(rest)
			st := stage{from: f[0], env: map[string]string{}}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if !strings.EqualFold(instr, "ARG") {
				t.Fatalf("%s: %s before FROM", file, instr)
			}
			continue
		}
		st := &stages[len(stages)-1]
		switch strings.ToUpper(instr) {
		case "ENV":
			w, err := shellWords(rest)
			if err != nil {
				t.Fatalf("%s: ENV %s: %v", file, rest, err)
			}
			if len(w) > 0 && !strings.Contains(w[0], "=") { // legacy ENV NAME value
				st.env[w[0]] = strings.TrimSpace(strings.TrimPrefix(rest, w[0]))
				continue
			}
			for _, kv := range w {
				k, v, _ := strings.Cut(kv, "=")
				st.env[k] = v
			}
		case "RUN":
			st.runs = append(st.runs, rest)
		case "COPY":
			w, err := shellWords(rest)
			if err != nil {
				t.Fatalf("%s: COPY %s: %v", file, rest, err)
			}
			var c copyInstr
			var args []string
			for _, a := range w {
				if v, ok := strings.CutPrefix(a, "--from="); ok {
					c.from = v
				} else if !strings.HasPrefix(a, "--") {
					args = append(args, a)
				}
			}
			if len(args) < 2 {
				t.Fatalf("%s: COPY %s: want a source and a destination", file, rest)
			}
			c.src, c.dst = args[0], args[len(args)-1]
			st.copies = append(st.copies, c)
		}
	}
	if len(stages) == 0 {
		t.Fatalf("%s: no FROM", file)
	}
	return stages
}

// shellWords splits s on blanks, honouring double and single quotes and backslashes.
func shellWords(s string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == '"' && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case quote != 0:
			cur.WriteRune(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

// goBuild finds the `go build` of pkg in a stage: its -o output and whether CGO is off.
func goBuild(t *testing.T, st stage, pkg string) (out string, cgoOff bool) {
	t.Helper()
	for _, run := range st.runs {
		w, err := shellWords(run)
		if err != nil || !slices.Contains(w, pkg) {
			continue
		}
		i := slices.Index(w, "build")
		if i < 1 || w[i-1] != "go" {
			continue
		}
		o, ok := flagValue(w[i:], "-o")
		if !ok {
			t.Fatalf("go build of %s has no -o: %s", pkg, run)
		}
		return o, slices.Contains(w[:i], "CGO_ENABLED=0")
	}
	t.Fatalf("stage %s (%s) has no `go build ... %s`", st.name, st.from, pkg)
	return "", false
}

// effectiveEnv is a service's environment as the container sees it: the image's ENV, then
// the compose file's values (interpolated with their defaults) on top.
func effectiveEnv(t *testing.T, img stage, s service) map[string]string {
	t.Helper()
	env := maps.Clone(img.env)
	for k, v := range s.Environment {
		env[k] = mustExpand(t, v)
	}
	return env
}

// ---- the code the deployment must match ----

// repoRoot is the Go module root: the compose file's build context.
const repoRoot = ".."

var serveFlags = sync.OnceValues(func() (map[string]bool, error) {
	cmd := exec.Command("go", "run", blockwirePkg, "serve", "--help")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go run %s serve --help: %v\n%s", blockwirePkg, err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["http-addr"] || !flags["nats-url"] {
		return nil, fmt.Errorf("serve --help lists no --http-addr or --nats-url; the parser is out of date:\n%s", out)
	}
	return flags, nil
})

// pluginEnvNames are the BLOCKWIRE_* names the plugin's code reads (string literals in the
// non-test Go files of enforcer/ and cmd/noname-prevention/). It fails the test when it finds
// none: the loops over them would check nothing.
func pluginEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	lit := regexp.MustCompile(`"(BLOCKWIRE_[A-Z0-9_]+)"`)
	for _, dir := range []string{"enforcer", filepath.FromSlash(pluginPkg)} {
		files, err := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
		if err != nil {
			t.Fatalf("list %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range lit.FindAllStringSubmatch(string(data), -1) {
				names[m[1]] = true
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("found no BLOCKWIRE_* name in the Go files of enforcer/ and %s: the plugin reads its settings elsewhere, or the parser is out of date", pluginPkg)
	}
	return names
}

// hasGoFiles reports whether a package directory of the module has Go source.
func hasGoFiles(pkg string) bool {
	files, _ := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pkg), "*.go"))
	return len(files) > 0
}
