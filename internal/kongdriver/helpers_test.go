package kongdriver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The plugins are built once per test binary run: go build is the slow part of every test.
var testBuilds struct {
	once sync.Once
	dir  string
	note string
	err  error
}

var pluginPackages = []string{
	"github.com/blockwire/blockwire/internal/refplugins/noop",
	"github.com/blockwire/blockwire/internal/refplugins/calls",
	"./testdata/exitplugin",
	"./testdata/echoplugin",
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testBuilds.dir != "" {
		_ = os.RemoveAll(testBuilds.dir)
	}
	os.Exit(code)
}

// pluginBinary returns the path of a built plugin; the file's name is the plugin name.
func pluginBinary(tb testing.TB, name string) string {
	tb.Helper()
	testBuilds.once.Do(func() {
		buildPlugins()
		if testBuilds.note != "" {
			tb.Log(testBuilds.note) // once, in the test that did the build
		}
	})
	if testBuilds.err != nil {
		tb.Fatalf("build plugins: %v", testBuilds.err)
	}
	return filepath.Join(testBuilds.dir, name)
}

func buildPlugins() {
	dir, err := os.MkdirTemp("", "kdbin")
	if err != nil {
		testBuilds.err = err
		return
	}
	testBuilds.dir = dir
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pluginPackages...)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err == nil {
		return
	}
	if !bytes.Contains(out, []byte("missing go.sum entry")) {
		testBuilds.err = fmt.Errorf("go build: %w\n%s", err, out)
		return
	}
	// go-pdk's server package needs github.com/ugorji/go/codec, which go.mod does not list yet.
	// Build against a private copy of go.mod/go.sum with -mod=mod so the real ones stay as they are.
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		testBuilds.err = fmt.Errorf("go env GOMOD: %w", err)
		return
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	modDir := filepath.Join(dir, "modfile")
	if err := os.Mkdir(modDir, 0o755); err != nil {
		testBuilds.err = err
		return
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			testBuilds.err = err
			return
		}
		if err := os.WriteFile(filepath.Join(modDir, f), data, 0o644); err != nil {
			testBuilds.err = err
			return
		}
	}
	args = append([]string{"build", "-modfile=" + filepath.Join(modDir, "go.mod"), "-mod=mod",
		"-o", dir + string(filepath.Separator)}, pluginPackages...)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		testBuilds.err = fmt.Errorf("go build with private modfile: %w\n%s", err, out)
		return
	}
	testBuilds.note = "note: go.mod lacks github.com/ugorji/go/codec (needed by go-pdk/server); plugins were built with a private -modfile copy"
}

// logWriter sends the plugin's output to the test log, one line per call.
type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startDriver runs a built plugin for the duration of the test.
func startDriver(tb testing.TB, name string) *Driver {
	tb.Helper()
	out := &prefixWriter{w: logWriter{tb}, prefix: []byte("[" + name + "] ")}
	d, err := Start(testContext(tb), Config{Binary: pluginBinary(tb, name), Stdout: out, Stderr: out})
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}

func startInstance(tb testing.TB, d *Driver, config map[string]any) *Instance {
	tb.Helper()
	inst, err := d.StartInstance(testContext(tb), config)
	if err != nil {
		tb.Fatalf("StartInstance(%v): %v", config, err)
	}
	return inst
}

// testContext bounds every wait so a protocol bug fails the test instead of hanging it.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
