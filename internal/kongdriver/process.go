package kongdriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is one run of the plugin server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its output is copied
	err  error         // cmd.Wait's result; read only after done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to grace for the exit; it reports whether the process is gone.
func (p *process) signal(sig os.Signal, grace time.Duration) bool {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// stop asks for a clean exit first (go-pdk installs no handler, so SIGTERM ends it at once) and
// kills only if that did not work within grace.
func (p *process) stop(grace time.Duration) {
	if !p.signal(syscall.SIGTERM, grace) {
		p.kill()
	}
}

// kill waits for the exit without a bound: SIGKILL cannot be ignored, so the wait is short.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// launch starts the server and waits until its socket accepts a connection.
func (d *Driver) launch(ctx context.Context) (*process, error) {
	// A socket file left by a killed process would look like readiness; go-pdk removes it too.
	if err := os.Remove(d.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kongdriver: remove stale socket: %w", err)
	}
	cmd := exec.Command(d.cfg.Binary, "-kong-prefix", d.prefix)
	cmd.Env = append(os.Environ(), d.cfg.Env...)
	cmd.Stdout, cmd.Stderr = d.cfg.Stdout, d.cfg.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kongdriver: start %s: %w", d.cfg.Binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := d.waitReady(ctx, p); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// waitReady polls for the socket file, then dials it: between bind and listen a connect is
// refused, so existence alone is not readiness. The probe connection is kept in the pool rather
// than closed, because go-pdk logs an error for every connection closed without a call.
func (d *Driver) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(d.socket); err == nil {
			var dialer net.Dialer
			nc, err := dialer.DialContext(ctx, "unix", d.socket)
			if err == nil {
				d.pool.adopt(nc)
				return nil
			}
			if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) && ctx.Err() == nil {
				return fmt.Errorf("kongdriver: connect to %s: %w", d.socket, err)
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("kongdriver: %s exited before listening on %s: %v", d.cfg.Binary, d.socket, p.err)
		case <-ctx.Done():
			return fmt.Errorf("kongdriver: waiting for %s (start timeout %s): %w", d.socket, d.cfg.StartTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// prefixWriter prefixes each complete line with the plugin's name, so the plugin's log lines can
// be told apart from the test's own output on a shared stderr.
type prefixWriter struct {
	w      io.Writer
	prefix []byte

	mu  sync.Mutex
	buf []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		line := append(append([]byte{}, pw.prefix...), pw.buf[:i+1]...)
		pw.buf = pw.buf[i+1:]
		if _, err := pw.w.Write(line); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}
