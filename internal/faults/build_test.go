package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// What the scenarios run, built once per test binary. blockwire and the plugin are built with
// -race when the tests are, so a race in a real process under fault fails the test that
// provoked it; nats-server is not ours and is always built plain.
var programs = map[string]struct {
	pkg  string
	race bool
}{
	"blockwire":         {pkg: "github.com/blockwire/blockwire/cmd/blockwire", race: true},
	"noname-prevention": {pkg: "github.com/blockwire/blockwire/cmd/noname-prevention", race: true},
	"nats-server":       {pkg: "github.com/nats-io/nats-server/v2"},
}

type built struct {
	once sync.Once
	path string
	err  error
}

var (
	builds   sync.Map // name → *built
	buildDir struct {
		once sync.Once
		dir  string
		err  error
	}
)

// binary returns the path of a built program; its file name is the program's name (the
// plugin's name in Kong is its executable's basename).
func binary(tb testing.TB, name string) string {
	tb.Helper()
	p, ok := programs[name]
	if !ok {
		tb.Fatalf("unknown program %q", name)
	}
	// A short directory outside t.TempDir(): the binaries outlive one test.
	buildDir.once.Do(func() { buildDir.dir, buildDir.err = os.MkdirTemp("", "flt-bin") })
	if buildDir.err != nil {
		tb.Fatal(buildDir.err)
	}
	bv, _ := builds.LoadOrStore(name, &built{})
	b := bv.(*built)
	b.once.Do(func() {
		b.path = filepath.Join(buildDir.dir, name)
		args := []string{"build", "-o", b.path}
		if p.race && raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, p.pkg)...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

func removeBuildDir() {
	if buildDir.dir != "" {
		_ = os.RemoveAll(buildDir.dir)
	}
}
