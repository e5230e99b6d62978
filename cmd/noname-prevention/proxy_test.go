package main

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// faultProxy is a TCP proxy between a plugin and NATS that a test can hold: while held it
// accepts new connections but forwards nothing, so the client waits for the server's INFO as
// it would behind a stalled network; release forwards the parked connections (a client
// still waiting then proceeds at once) and every later one. Connections already forwarded
// are left alone. It is a network fault injector in front of a real server, not a stand-in
// for one.
type faultProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	holding bool
	parked  []net.Conn
	open    map[net.Conn]struct{} // every connection, either side, closed by close
	closed  bool
	wg      sync.WaitGroup

	accepted atomic.Int64 // connections accepted
	held     atomic.Int64 // of which parked while held
}

// newFaultProxy forwards to target (host:port) until the test ends.
func newFaultProxy(tb testing.TB, target string) *faultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.close)
	return p
}

// url is the proxy as a NATS URL.
func (p *faultProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.open[c] = struct{}{}
		if p.holding {
			p.parked = append(p.parked, c)
			p.held.Add(1)
			p.mu.Unlock()
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(c)
	}
}

// forward pipes c to a new connection to the target until either side ends. The caller has
// done p.wg.Add(1).
func (p *faultProxy) forward(c net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = up.Close()
		p.drop(c)
		return
	}
	p.open[up] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done // one direction ended: end both, as a proxy does
	p.drop(c)
	p.drop(up)
	<-done
}

func (p *faultProxy) drop(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

// hold parks every new connection until release.
func (p *faultProxy) hold() {
	p.mu.Lock()
	p.holding = true
	p.mu.Unlock()
}

// release forwards the parked connections and every new one.
func (p *faultProxy) release() {
	p.mu.Lock()
	p.holding = false
	parked := p.parked
	p.parked = nil
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(len(parked))
	p.mu.Unlock()
	for _, c := range parked {
		go p.forward(c)
	}
}

// parkedNow is the number of connections waiting for release.
func (p *faultProxy) parkedNow() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.open {
		_ = c.Close()
	}
	p.parked = nil
	p.mu.Unlock()
	p.wg.Wait()
}
