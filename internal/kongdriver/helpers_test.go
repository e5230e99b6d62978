package kongdriver

import (
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
	if err != nil {
		testBuilds.err = fmt.Errorf("go build: %w\n%s", err, out)
	}
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
