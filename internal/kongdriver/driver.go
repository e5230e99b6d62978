package kongdriver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config says which plugin server to run and how.
type Config struct {
	// Binary is the compiled plugin server; its basename (symlinks resolved) is the plugin name.
	Binary string
	// Prefix is the -kong-prefix directory. Empty: a new short temp dir, removed by Close; Linux
	// limits socket paths to 108 bytes, which a t.TempDir() path can exceed.
	Prefix string
	// Env is appended to os.Environ() for the plugin process (and for -dump).
	Env []string
	// Stdout and Stderr receive the plugin's output; nil means os.Stderr with a "[name] " prefix.
	Stdout, Stderr io.Writer
	// StartTimeout bounds the wait for the socket after each start; default 10s.
	StartTimeout time.Duration
	// StopTimeout is how long Close waits after SIGTERM before SIGKILL; default 5s.
	StopTimeout time.Duration
	// MaxIdleConns caps the idle connections kept for reuse; default 64.
	MaxIdleConns int
}

// Driver runs one plugin server process and speaks Kong's side of the protocol to it. All its
// methods are safe for concurrent use.
type Driver struct {
	cfg       Config
	prefix    string
	ownPrefix bool
	socket    string
	info      *PluginInfo
	nodeID    string
	pool      *pool

	rpcSeq  atomic.Int64 // RpcCall.sequence, checked against the RpcReturn as Kong asserts
	instSeq atomic.Int64 // the "__seq__" given to instances, Kong's plugins_iterator counter

	mu     sync.Mutex // guards proc and closed: process lifecycle only, never held during events
	proc   *process
	closed bool
}

// errDriverClosed is returned by calls made after Close.
var errDriverClosed = errors.New("kongdriver: driver closed")

// Start runs the plugin server with -kong-prefix and waits until its socket accepts connections.
func Start(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Binary == "" {
		return nil, errors.New("kongdriver: Config.Binary is empty")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 5 * time.Second
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 64
	}
	d := &Driver{cfg: cfg, prefix: cfg.Prefix, nodeID: newUUID()}
	if d.prefix == "" {
		dir, err := os.MkdirTemp("", "kd")
		if err != nil {
			return nil, fmt.Errorf("kongdriver: create prefix: %w", err)
		}
		d.prefix, d.ownPrefix = dir, true
	}
	if err := d.start(ctx); err != nil {
		if d.ownPrefix {
			_ = os.RemoveAll(d.prefix)
		}
		return nil, err
	}
	return d, nil
}

func (d *Driver) start(ctx context.Context) error {
	// -dump with the same prefix gives the name and the exact socket path go-pdk will use.
	info, err := dump(ctx, d.cfg.Binary, d.prefix, d.cfg.Env)
	if err != nil {
		return err
	}
	if len(info.SocketPath) >= 108 {
		return fmt.Errorf("kongdriver: socket path %q is %d bytes; Linux allows 107: use a shorter Prefix", info.SocketPath, len(info.SocketPath))
	}
	d.info, d.socket = info, info.SocketPath
	d.pool = &pool{path: d.socket, maxIdle: d.cfg.MaxIdleConns}
	if d.cfg.Stdout == nil {
		d.cfg.Stdout = &prefixWriter{w: os.Stderr, prefix: []byte("[" + info.Name + "] ")}
	}
	if d.cfg.Stderr == nil {
		d.cfg.Stderr = d.cfg.Stdout
	}
	p, err := d.launch(ctx)
	if err != nil {
		return err
	}
	d.proc = p
	return nil
}

// Info returns the plugin's -dump description.
func (d *Driver) Info() *PluginInfo { return d.info }

// Prefix returns the -kong-prefix directory.
func (d *Driver) Prefix() string { return d.prefix }

// SocketPath returns the plugin server's socket.
func (d *Driver) SocketPath() string { return d.socket }

// Pid returns the id of the current (or last) plugin process.
func (d *Driver) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return 0
	}
	return d.proc.cmd.Process.Pid
}

// Kill sends SIGKILL, as a crash would, and waits for the process to be gone. Events then fail
// until Restart.
func (d *Driver) Kill() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil || d.proc.exited() {
		return errors.New("kongdriver: plugin process is not running")
	}
	d.proc.kill()
	d.pool.reset()
	return nil
}

// Restart starts the process again with the same prefix and environment, stopping it first if it
// still runs. Existing Instances keep working: like Kong, the driver starts an instance again when
// the new process does not know it.
func (d *Driver) Restart(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errDriverClosed
	}
	if d.proc != nil {
		d.proc.stop(d.cfg.StopTimeout)
	}
	d.pool.reset()
	p, err := d.launch(ctx)
	if err != nil {
		return fmt.Errorf("kongdriver: restart: %w", err)
	}
	d.proc = p
	return nil
}

// Close stops the process (SIGTERM, then SIGKILL after StopTimeout) and removes the prefix if
// Start created it. It is safe to call more than once.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.pool.close()
	if d.proc != nil {
		d.proc.stop(d.cfg.StopTimeout)
	}
	if d.ownPrefix {
		if err := os.RemoveAll(d.prefix); err != nil {
			return fmt.Errorf("kongdriver: remove prefix: %w", err)
		}
	} else {
		// Someone else's prefix: leave it as found, minus the socket go-pdk does not remove.
		_ = os.Remove(d.socket)
	}
	return nil
}

// newUUID makes the node id answered to kong.node.get_id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
