package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMain lets the test binary play the reference child: the load generator
// re-executes os.Executable() — in tests, this binary — with -serve-reference.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve-reference" {
		main() // exits
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the child's stderr copier and the
// test's own writes; onWrite, if set, sees everything written so far.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	onWrite func(string)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.onWrite != nil {
		s.onWrite(s.b.String())
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func streamGone(t *testing.T, url string) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, refStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s still there after the run (err %v)", refStream, err)
	}
}

var pidRE = regexp.MustCompile(`child process pid (\d+)`)

// processGone fails unless the child named in out no longer exists (it was
// waited for, so not even a zombie is left).
func processGone(t *testing.T, out string) {
	t.Helper()
	m := pidRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no child pid in the output:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[1])
	if pid == os.Getpid() {
		t.Fatalf("the reference ran in the load generator's own process (pid %d)", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("reference process %d still exists after the run (kill -0: %v)", pid, err)
	}
}

func TestRunAgainstReferenceProcess(t *testing.T) {
	ns := natstest.Start(t)
	args := []string{"blockwire-load", "-target", "reference", "-nats-url", ns.URL(),
		"-n", "200", "-warmup", "50", "-runs", "2", "-c", "8"}
	cfg, err := parseFlags(args[1:], &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	if code := run(context.Background(), cfg, args, &stdout, &stderr); code != 0 {
		t.Fatalf("run = %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	// 1 preflight + 2 runs x (50 warmup + 200): one stored message each.
	if !strings.Contains(out, "stream BLOCKWIRE_LOADREF held 501 messages for 501 accepted requests") {
		t.Errorf("stream count missing or wrong:\n%s", out)
	}
	if strings.Contains(stderr.String(), "warning") {
		t.Errorf("warnings:\n%s", stderr.String())
	}
	processGone(t, out)
	streamGone(t, ns.URL())
}

func TestRunInterruptedStopsReferenceProcess(t *testing.T) {
	ns := natstest.Start(t)
	args := []string{"blockwire-load", "-target", "reference", "-nats-url", ns.URL(), "-n", "200000", "-runs", "3"}
	cfg, err := parseFlags(args[1:], &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	// Interrupt as soon as the reference is up, as SIGINT would.
	stdout.onWrite = func(s string) {
		if strings.Contains(s, "reference: http://") {
			cancel()
		}
	}
	if code := run(ctx, cfg, args, &stdout, &stderr); code != 1 {
		t.Fatalf("interrupted run = %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("no interruption reported:\n%s", stderr.String())
	}
	processGone(t, stdout.String())
	streamGone(t, ns.URL())
}

func TestReferenceProcessLifecycle(t *testing.T) {
	ns := natstest.Start(t)
	var stderr syncBuffer

	t.Run("exits when its stdin closes", func(t *testing.T) {
		p, err := startReferenceProcess(context.Background(), ns.URL(), &stderr)
		if err != nil {
			t.Fatal(err)
		}
		if p.Pid() == os.Getpid() || !p.addr.Addr().IsLoopback() {
			t.Fatalf("pid %d addr %s", p.Pid(), p.addr)
		}
		p.stdin.Close() // what a parent killed with SIGKILL leaves behind
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Fatal("the child kept running after EOF on its stdin")
		}
		if p.err != nil {
			t.Errorf("exit: %v", p.err)
		}
	})

	t.Run("stop is clean and idempotent", func(t *testing.T) {
		p, err := startReferenceProcess(context.Background(), ns.URL(), &stderr)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := p.stop(); err != nil {
			t.Errorf("second stop: %v", err)
		}
	})

	t.Run("a child that dies during the run is reported", func(t *testing.T) {
		p, err := startReferenceProcess(context.Background(), ns.URL(), &stderr)
		if err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
		if err := p.stop(); err == nil || !strings.Contains(err.Error(), "exited during the run") {
			t.Errorf("stop after the child died = %v", err)
		}
	})

	t.Run("no NATS: start fails with the child's reason", func(t *testing.T) {
		var errOut syncBuffer
		_, err := startReferenceProcess(context.Background(), "nats://127.0.0.1:1", &errOut)
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
			t.Fatalf("start = %v", err)
		}
		if !strings.Contains(errOut.String(), "connect to NATS") {
			t.Errorf("child stderr = %q", errOut.String())
		}
	})

	t.Run("cancelled while starting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p, err := startReferenceProcess(ctx, ns.URL(), &stderr)
		if err == nil {
			_ = p.stop()
			t.Fatal("start with a cancelled context succeeded")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("start = %v, want context.Canceled", err)
		}
	})
}

func TestParseRefAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:41234\n", "[::1]:8080\n"} {
		if _, err := parseRefAddr(ok); err != nil {
			t.Errorf("parseRefAddr(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:41234", "10.0.0.1:80\n", "127.0.0.1:0\n", "hello\n", "127.0.0.1:80 extra\n"} {
		if _, err := parseRefAddr(bad); err == nil {
			t.Errorf("parseRefAddr(%q) accepted", bad)
		}
	}
}

func TestHiddenFlags(t *testing.T) {
	var help strings.Builder
	if _, err := parseFlags([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for name := range hiddenFlags {
		if strings.Contains(help.String(), "-"+name) {
			t.Errorf("-help lists the hidden flag -%s:\n%s", name, help.String())
		}
	}
	t.Setenv("BLOCKWIRE_WEBHOOK_TOKEN", "s3cret-from-env")
	help.Reset()
	_, _ = parseFlags([]string{"-h"}, &help)
	if strings.Contains(help.String(), "s3cret-from-env") {
		t.Errorf("-help shows the token from the environment:\n%s", help.String())
	}
	if _, err := parseFlags([]string{"-listen", "127.0.0.1:0"}, &strings.Builder{}); err == nil {
		t.Error("-listen without -serve-reference accepted")
	}
	cfg, err := parseFlags([]string{"-serve-reference", "-nats-url", "nats://x:1", "-listen", "127.0.0.1:0"}, &strings.Builder{})
	if err != nil || !cfg.ServeReference || cfg.Listen != "127.0.0.1:0" {
		t.Errorf("child flags: %+v %v", cfg, err)
	}
}
