package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const clusterName = "blockwire"

// Ports are fixed before the servers start (each node's routes name the others), so they are
// chosen outside Linux's ephemeral range (32768–60999): a port there may be taken at any moment
// as the source port of an outgoing connection, including one of the cluster's own.
const portLow, portHigh = 20000, 32000

// node is one embedded nats-server of the cluster; its ports and store survive a Restart.
type node struct {
	name       string
	clientPort int
	routePort  int
	storeDir   string

	mu  sync.Mutex
	srv *server.Server // nil while down
}

// URL is the node's client URL.
func (n *node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

func (n *node) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// cluster is three nodes that form one JetStream meta group.
type cluster struct {
	tb    testing.TB
	nodes []*node
	logs  *serverLogs
}

// startCluster runs a 3-node JetStream cluster on loopback until the test ends, and returns once
// the meta leader sees all three peers current. A port taken between the probe and the start
// (another test process) costs a retry with new ports.
func startCluster(tb testing.TB) *cluster {
	tb.Helper()
	var errs []error
	for attempt := range 5 {
		c := &cluster{tb: tb, logs: &serverLogs{tb: tb}}
		ports := freePorts(tb, 6)
		for i := range 3 {
			c.nodes = append(c.nodes, &node{
				name: fmt.Sprintf("n%d", i+1), clientPort: ports[2*i], routePort: ports[2*i+1],
				storeDir: filepath.Join(tb.TempDir(), fmt.Sprintf("n%d", i+1)),
			})
		}
		err := func() error {
			for _, n := range c.nodes {
				if err := c.start(n); err != nil {
					return err
				}
			}
			return c.waitMeta(3)
		}()
		if err == nil {
			err = c.waitAPI()
		}
		if err == nil {
			tb.Cleanup(func() {
				c.shutdownAll()
				c.logs.close()
			})
			return c
		}
		c.shutdownAll()
		c.logs.close()
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt+1, err))
	}
	tb.Fatalf("start a 3-node cluster: %v", errors.Join(errs...))
	return nil
}

// freePorts finds n distinct ports in [portLow, portHigh) that accept a listener now.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			tb.Fatalf("no %d free ports in %d-%d", n, portLow, portHigh)
		}
		p := portLow + rand.IntN(portHigh-portLow)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = ln.Close()
		ports = append(ports, p)
	}
	return ports
}

func (c *cluster) options(n *node) *server.Options {
	var routes []string
	for _, o := range c.nodes {
		if o != n {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.routePort))
		}
	}
	return &server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.clientPort,
		JetStream:  true,
		StoreDir:   n.storeDir,
		NoSigs:     true,
		Cluster:    server.ClusterOpts{Name: clusterName, Host: "127.0.0.1", Port: n.routePort},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

// start runs n (again) on its ports and store.
func (c *cluster) start(n *node) error {
	srv, err := server.NewServer(c.options(n))
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	srv.SetLogger(c.logs.logger(n.name), false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("%s (client port %d, route port %d) not ready: %s", n.name, n.clientPort, n.routePort, c.logs.lastFatal(n.name))
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

// Shutdown stops n the way nats-server stops on SIGTERM or a process exit through its own code
// path: its raft leaders are asked to step down first, then connections are closed.
func (c *cluster) Shutdown(n *node) {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart brings a node that was shut down back on its ports and store.
func (c *cluster) Restart(tb testing.TB, n *node) {
	tb.Helper()
	if err := c.start(n); err != nil {
		tb.Fatalf("restart %s: %v", n.name, err)
	}
	if err := c.waitMeta(3); err != nil {
		tb.Fatalf("restart %s: %v", n.name, err)
	}
	if err := c.waitAPI(); err != nil {
		tb.Fatalf("restart %s: %v", n.name, err)
	}
}

func (c *cluster) shutdownAll() {
	for _, n := range c.nodes {
		c.Shutdown(n)
	}
}

// URLs is every node's client URL, first at the front, comma separated.
func (c *cluster) URLs(first *node) string {
	urls := []string{}
	if first != nil {
		urls = append(urls, first.URL())
	}
	for _, n := range c.nodes {
		if n != first {
			urls = append(urls, n.URL())
		}
	}
	return strings.Join(urls, ",")
}

// byName is the node called name, or nil.
func (c *cluster) byName(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// up is the running nodes.
func (c *cluster) up() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.server() != nil {
			out = append(out, n)
		}
	}
	return out
}

// waitMeta returns once every running node names the same meta leader and that leader sees
// peers peers (itself included), all current. It gives up after 30 s: forming a meta group on
// loopback takes well under a second.
func (c *cluster) waitMeta(peers int) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		ok, why := c.metaReady(peers)
		if ok {
			return nil
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("jetstream meta group not ready after 30s: %s", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAPI returns once every running node answers a JetStream API request. Right after the meta
// group formed, the first request through a node is sometimes never answered (its interest has
// not reached the meta leader yet), and a client waits out its whole timeout: 5 s in nats.go.
func (c *cluster) waitAPI() error {
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.up() {
		nc, err := nats.Connect(n.URL(), nats.Name("cluster-ready"))
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return err
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			_, err = js.AccountInfo(ctx)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				nc.Close()
				return fmt.Errorf("%s: no JetStream API answer after 30s: %w", n.name, err)
			}
		}
		nc.Close()
	}
	return nil
}

func (c *cluster) metaReady(peers int) (bool, string) {
	leader := ""
	for _, n := range c.up() {
		srv := n.server()
		if srv == nil {
			return false, n.name + " went down"
		}
		if msg := c.logs.lastFatal(n.name); msg != "" {
			return false, n.name + ": " + msg
		}
		jsz, err := srv.Jsz(nil)
		if err != nil || jsz.Meta == nil || jsz.Meta.Leader == "" {
			return false, n.name + " knows no meta leader"
		}
		if leader != "" && jsz.Meta.Leader != leader {
			return false, fmt.Sprintf("meta leaders disagree: %s and %s", leader, jsz.Meta.Leader)
		}
		leader = jsz.Meta.Leader
		if !srv.JetStreamIsLeader() {
			continue
		}
		current := 1
		for _, p := range jsz.Meta.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		if current < peers || jsz.Meta.Size < peers {
			return false, fmt.Sprintf("meta leader %s sees %d current peers of %d (want %d)", n.name, current, jsz.Meta.Size, peers)
		}
	}
	if leader == "" {
		return false, "no node up"
	}
	return true, ""
}

// connect opens a client connection to every node (preferred first, in order) for the test's own
// checks; closed by t.Cleanup.
func (c *cluster) connect(tb testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(c.URLs(nil), nats.Name(name), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect %s: %v", name, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// groupInfo is a stream's raft group as one of its clients sees it.
type groupInfo struct {
	Leader   string
	Peers    []string // leader first
	Current  int      // peers current, leader included
	Lag      uint64   // operations the followers are behind, summed
	Replicas int      // configured
}

// streamGroup asks for a stream's info and summarises its cluster.
func streamGroup(ctx context.Context, js jetstream.JetStream, stream string) (groupInfo, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return groupInfo{}, err
	}
	info := s.CachedInfo()
	g := groupInfo{Replicas: info.Config.Replicas}
	if info.Cluster == nil {
		return g, errors.New("no cluster info")
	}
	g.Leader = info.Cluster.Leader
	if g.Leader != "" {
		g.Peers = append(g.Peers, g.Leader)
		g.Current = 1
	}
	for _, p := range info.Cluster.Replicas {
		g.Peers = append(g.Peers, p.Name)
		g.Lag += p.Lag
		if p.Current && !p.Offline {
			g.Current++
		}
	}
	return g, nil
}

// waitGroup polls stream's group until ok says it is as wanted; it fails after 30 s in which the
// group's summary did not change (a failover or a catch-up in progress keeps changing it: new
// leader, peers, lag).
func waitGroup(tb testing.TB, js jetstream.JetStream, stream string, ok func(groupInfo) bool) groupInfo {
	tb.Helper()
	var last string
	moved := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g, err := streamGroup(ctx, js, stream)
		cancel()
		if err == nil && ok(g) {
			return g
		}
		now := fmt.Sprintf("%+v %v", g, err)
		if now != last {
			last, moved = now, time.Now()
		}
		if time.Since(moved) > 30*time.Second {
			tb.Fatalf("stream %s: no change for 30s and still not as wanted: %s", stream, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverLogs keeps the servers' warnings and errors (printed when the test fails, or as they
// come with BLOCKWIRE_CLUSTER_LOG=1) and each server's fatal error.
type serverLogs struct {
	tb      testing.TB
	mu      sync.Mutex
	lines   []string
	fatal   map[string]string
	consume []consumeEvent
	closed  atomic.Bool
}

const keepLogLines = 200

func (l *serverLogs) logger(name string) server.Logger { return &nodeLogger{l: l, name: name} }

func (l *serverLogs) add(name, level, msg string, fatal bool) {
	line := fmt.Sprintf("%s %s [%s] %s", time.Now().Format("15:04:05.000"), name, level, msg)
	if os.Getenv("BLOCKWIRE_CLUSTER_LOG") != "" && !l.closed.Load() {
		l.tb.Log(line)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if len(l.lines) > keepLogLines {
		l.lines = l.lines[len(l.lines)-keepLogLines:]
	}
	if fatal {
		if l.fatal == nil {
			l.fatal = map[string]string{}
		}
		l.fatal[name] = msg
	}
}

func (l *serverLogs) lastFatal(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal[name]
}

// close prints the kept lines of a failed test; after it, nothing is logged to the test.
func (l *serverLogs) close() {
	if l.closed.Swap(true) {
		return
	}
	if !l.tb.Failed() || os.Getenv("BLOCKWIRE_CLUSTER_LOG") != "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tb.Logf("last %d warnings and errors of the nats servers:\n%s", len(l.lines), strings.Join(l.lines, "\n"))
}

// writer is an io.Writer for a zerolog logger whose lines join the servers' (a replica's
// warnings interleaved with the servers' tell what it saw during a failover).
func (l *serverLogs) writer(name string) io.Writer { return logWriter{l: l, name: name} }

type logWriter struct {
	l    *serverLogs
	name string
}

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	w.l.add(w.name, "LOG", line, false)
	if strings.Contains(line, `"message":"consume incidents"`) {
		w.l.mu.Lock()
		w.l.consume = append(w.l.consume, consumeEvent{at: time.Now(), who: w.name, line: line})
		w.l.mu.Unlock()
	}
	return len(p), nil
}

// consumeEvent is a warning of a replica's pull subscription on the incident stream.
type consumeEvent struct {
	at   time.Time
	who  string
	line string
}

// consumeEvents is every such warning so far.
func (l *serverLogs) consumeEvents() []consumeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.consume)
}

type nodeLogger struct {
	l    *serverLogs
	name string
}

func (n *nodeLogger) Noticef(string, ...any) {}
func (n *nodeLogger) Debugf(string, ...any)  {}
func (n *nodeLogger) Tracef(string, ...any)  {}
func (n *nodeLogger) Warnf(f string, v ...any) {
	n.l.add(n.name, "WRN", fmt.Sprintf(f, v...), false)
}
func (n *nodeLogger) Errorf(f string, v ...any) {
	n.l.add(n.name, "ERR", fmt.Sprintf(f, v...), false)
}
func (n *nodeLogger) Fatalf(f string, v ...any) {
	n.l.add(n.name, "FTL", fmt.Sprintf(f, v...), true)
}
