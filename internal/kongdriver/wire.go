package kongdriver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// maxFrame bounds a frame accepted from the plugin. go-pdk sets no limit, but a desynchronised
// stream would otherwise be read as a length of gigabytes and allocated.
const maxFrame = 64 << 20

// conn is one connection to the plugin server. Reads are buffered because go-pdk writes a
// frame's length and body in separate writes, and each PDK call is two frames.
type conn struct {
	nc   net.Conn
	r    *bufio.Reader
	wbuf []byte
	gen  uint64 // the pool generation it was dialled in; older ones are not reused
}

func newConn(nc net.Conn, gen uint64) *conn {
	return &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), gen: gen}
}

// readFrame returns the next frame's bytes; a zero-length frame is a non-nil empty slice.
func (c *conn) readFrame() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes is over the %d-byte limit", n, maxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// writeFrame sends length and body in one write, so a frame is never split across the plugin's
// reads more than the kernel decides to.
func (c *conn) writeFrame(data []byte) error {
	c.wbuf = binary.LittleEndian.AppendUint32(c.wbuf[:0], uint32(len(data)))
	c.wbuf = append(c.wbuf, data...)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// arm makes blocking I/O on c honour ctx: ctx's deadline becomes the connection's (clearing the
// one a previous user left), and cancellation sets a deadline in the past, which wakes any
// blocked read or write. The returned disarm reports whether cancellation never touched the
// connection, i.e. whether it is still fit to go back to the pool.
func (c *conn) arm(ctx context.Context) (disarm func() bool) {
	deadline, _ := ctx.Deadline()
	_ = c.nc.SetDeadline(deadline)
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
}

func (c *conn) close() { _ = c.nc.Close() }

// pool keeps idle connections to the plugin socket, as Kong's keepalive pool does: an event takes
// one (or dials), and puts it back only after the event ended cleanly.
type pool struct {
	path    string
	maxIdle int

	mu     sync.Mutex
	idle   []*conn
	gen    uint64 // bumped when the server process changes; stale connections are then closed
	closed bool
}

func (p *pool) get(ctx context.Context) (*conn, error) {
	// An idle connection needs no wait, so without this check a cancelled ctx would go unnoticed
	// until the cancellation callback happened to run.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kongdriver: %w", err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errDriverClosed
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	gen := p.gen
	p.mu.Unlock()

	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", p.path)
	if err != nil {
		return nil, fmt.Errorf("kongdriver: connect to %s: %w", p.path, err)
	}
	return newConn(nc, gen), nil
}

// adopt wraps a connection dialled outside get (the readiness probe) as a current one.
func (p *pool) adopt(nc net.Conn) {
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	p.put(newConn(nc, gen))
}

func (p *pool) put(c *conn) {
	p.mu.Lock()
	if p.closed || c.gen != p.gen || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// reset drops every idle connection and marks checked-out ones stale: after a restart they lead
// to a process that no longer exists.
func (p *pool) reset() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.gen++
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

func (p *pool) close() {
	p.reset()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// isDropped reports whether err means the plugin closed the connection under us, which Kong
// answers by starting the instance again and replaying the event.
func isDropped(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ioError wraps an I/O failure; when ctx ended it names ctx's error first, because the failure is
// then only the deadline we set to wake the blocked call.
func ioError(ctx context.Context, what string, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is ctx's, and it can fire before ctx's own timer does.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			ctxErr = context.DeadlineExceeded
		}
	}
	if ctxErr != nil {
		return fmt.Errorf("kongdriver: %s: %w (%w)", what, ctxErr, err)
	}
	if isDropped(err) {
		return fmt.Errorf("kongdriver: %s: plugin closed the connection (go-pdk does when a call fails; see its stderr): %w", what, err)
	}
	return fmt.Errorf("kongdriver: %s: %w", what, err)
}
