package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startupLimit bounds the wait for a process to become ready. Nothing is timed against it: a
// healthy start takes a second or two, a slow machine only makes the wait longer.
const startupLimit = 2 * time.Minute

// proc is one real process started by a test, its output in a file of the test's temp dir.
// t.Cleanup kills it (SIGKILL) if the test did not stop it, on failure too.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been waited for
	err     error         // its exit status, once done is closed
}

// startProc runs bin with args and env (appended to this process's environment).
func startProc(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, logPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.alive() {
			_ = p.cmd.Process.Kill()
		}
		<-p.done
		out := p.output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", name, out)
		} else if t.Failed() {
			t.Logf("%s output (last 4 KiB):\n%s", name, tail(out, 4<<10))
		}
	})
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 sends SIGKILL, as a crash or the OOM killer would, and waits until the process is gone.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if !p.alive() {
		t.Fatalf("%s exited before it was killed: %v\n%s", p.name, p.err, tail(p.output(), 4<<10))
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// term sends SIGTERM, as a supervisor would, and waits for the exit; SIGKILL after grace.
func (p *proc) term(t *testing.T, grace time.Duration) {
	t.Helper()
	if !p.alive() {
		t.Fatalf("%s exited before it was stopped: %v\n%s", p.name, p.err, tail(p.output(), 4<<10))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}

func (p *proc) output() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	return string(b)
}

// tail is the end of s, at most n bytes, from a line start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitUntil polls ready until it returns nil, failing early when p exits and after
// startupLimit, naming the last reason it was not ready.
func waitUntil(t *testing.T, p *proc, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(startupLimit)
	for {
		err := ready()
		if err == nil {
			return
		}
		if !p.alive() {
			t.Fatalf("%s exited (%v) before %s:\n%s", p.name, p.err, what, tail(p.output(), 8<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s after %s: %v", p.name, what, startupLimit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHTTPReady waits until GET api/readyz answers 200.
func waitHTTPReady(t *testing.T, p *proc, api string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	waitUntil(t, p, "ready", func() error {
		resp, err := client.Get(api + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			return fmt.Errorf("readyz %d %s", resp.StatusCode, b.String())
		}
		return nil
	})
}

// waitJetStream waits until the NATS server at url accepts a client and answers JetStream.
func waitJetStream(t *testing.T, p *proc, url string) {
	t.Helper()
	waitUntil(t, p, "serving JetStream", func() error {
		nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.NoReconnect())
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err
	})
}
