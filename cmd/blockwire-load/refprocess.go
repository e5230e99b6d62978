package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"time"
)

// The reference handler runs in a child process: this command re-executes
// itself with the hidden flag -serve-reference.
//
// Why a separate process: fairness. `blockwire serve` is a process of its
// own, with its own scheduler and its own garbage collector; a reference
// handler inside the load generator would share the CPUs, the Go scheduler
// and the GC with the client goroutines that load it (64 of them by default),
// and so would look slower than serve for reasons that have nothing to do
// with the work it does. As two separate processes, both targets are driven
// the same way: from the same client, over loopback, with the scheduler and
// the GC of their own process. Neither process sets GOMAXPROCS: both keep the
// Go default (the CPUs available), as serve does.

// refStartTimeout bounds how long the child may take to connect to NATS and
// report its address.
const refStartTimeout = 30 * time.Second

// refProcess is a running reference child.
type refProcess struct {
	cmd    *exec.Cmd
	stdin  *os.File // the write end of the child's stdin: closing it tells the child to exit
	addr   netip.AddrPort
	exited chan struct{} // closed once the child has exited and been waited for
	err    error         // what Wait returned; read only after exited is closed

	stopOnce sync.Once
	stopped  bool // set by stop before it signals the child
}

// URL is where the reference takes incidents.
func (p *refProcess) URL() string { return "http://" + p.addr.String() + "/v1/incidents" }

// Pid is the child's process id.
func (p *refProcess) Pid() int { return p.cmd.Process.Pid }

// startReferenceProcess starts the reference handler as a child process that
// publishes to natsURL, waits for it to report its loopback address and
// returns it. The child's stderr goes to stderr. The caller must call stop.
func startReferenceProcess(ctx context.Context, natsURL string, stderr io.Writer) (*refProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("reference: find this executable to start the reference process: %w", err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("reference: %w", err)
	}
	cmd := exec.Command(exe, "-serve-reference", "-nats-url", natsURL, "-listen", "127.0.0.1:0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	err = cmd.Start()
	// The child has its own copies of these ends (or there is no child).
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("reference: start %s: %w", exe, err)
	}
	p := &refProcess{cmd: cmd, stdin: inW, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	// The child prints one line, its address; the rest of stdout (there
	// should be none) is drained so the child can never block on it.
	line := make(chan string, 1)
	go func() {
		defer outR.Close()
		br := bufio.NewReader(outR)
		s, _ := br.ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, br)
	}()

	timer := time.NewTimer(refStartTimeout)
	defer timer.Stop()
	select {
	case s := <-line:
		addr, perr := parseRefAddr(s)
		if perr == nil {
			p.addr = addr
			return p, nil
		}
		_ = p.stop()
		if s == "" { // no line at all: the child failed (its stderr says why)
			return nil, fmt.Errorf("reference: the reference process exited before it was ready (%v)", p.err)
		}
		return nil, fmt.Errorf("reference: %w", perr)
	case <-ctx.Done():
		_ = p.stop()
		return nil, ctx.Err()
	case <-timer.C:
		_ = p.stop()
		return nil, fmt.Errorf("reference: the reference process did not report its address within %s", refStartTimeout)
	}
}

// parseRefAddr parses the child's first line: a loopback host:port.
func parseRefAddr(line string) (netip.AddrPort, error) {
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return netip.AddrPort{}, fmt.Errorf("the reference process printed %q, not one line with its address", line)
	}
	ap, err := netip.ParseAddrPort(line[:len(line)-1])
	if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("the reference process printed %q, not a loopback host:port", line[:len(line)-1])
	}
	return ap, nil
}

// stop ends the child: EOF on its stdin, then SIGKILL if it is still there
// after 5 seconds; it waits for the child to be gone. No SIGTERM as well: the
// child, leaving on the EOF, restores the default disposition of SIGTERM
// before it exits, so a SIGTERM landing in that window would kill a child
// that was exiting cleanly (seen in CI as "signal: terminated"). It returns
// an error when the child had exited by itself before stop (it died during
// the run) or did not exit cleanly when asked. Calling it again is a no-op
// that returns the same error.
func (p *refProcess) stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.exited:
			// Died on its own: nothing to stop.
		default:
			p.stopped = true
			p.stdin.Close()
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		p.stdin.Close()
	})
	switch {
	case !p.stopped:
		return fmt.Errorf("reference: the reference process (pid %d) exited during the run: %v", p.Pid(), exitText(p.err))
	case p.err != nil:
		return fmt.Errorf("reference: the reference process (pid %d) did not exit cleanly: %w", p.Pid(), p.err)
	}
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.String()
	}
	return err.Error()
}
