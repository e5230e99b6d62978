package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/internal/kongdriver"
)

const pluginPkg = "github.com/blockwire/blockwire/cmd/noname-prevention"

// The plugin binary is built once per test binary, with -race when the tests are (so a race in
// the real process fails the test), as cmd/noname-prevention's tests build it.
var pluginBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginBuild.dir != "" {
		_ = os.RemoveAll(pluginBuild.dir)
	}
	os.Exit(code)
}

func pluginBinary(tb testing.TB) string {
	tb.Helper()
	pluginBuild.once.Do(func() {
		pluginBuild.dir, pluginBuild.err = os.MkdirTemp("", "np-cluster")
		if pluginBuild.err != nil {
			return
		}
		pluginBuild.path = filepath.Join(pluginBuild.dir, "noname-prevention")
		args := []string{"build", "-o", pluginBuild.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, pluginPkg)...).CombinedOutput()
		if err != nil {
			pluginBuild.err = fmt.Errorf("go build %s: %w\n%s", pluginPkg, err, out)
		}
	})
	if pluginBuild.err != nil {
		tb.Fatal(pluginBuild.err)
	}
	return pluginBuild.path
}

// pluginLog keeps a plugin's output; with -v it is echoed to the test log.
type pluginLog struct {
	tb   testing.TB
	name string
	mu   sync.Mutex
	buf  bytes.Buffer
	off  bool
}

func (l *pluginLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if testing.Verbose() && !l.off {
		l.tb.Log("plugin " + l.name + ": " + strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *pluginLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *pluginLog) stop() {
	l.mu.Lock()
	l.off = true
	l.mu.Unlock()
}

// plugin is the noname-prevention plugin server, driven as Kong drives it, with one instance
// configured as `curl -X POST :8001/plugins -d name=noname-prevention` would.
type plugin struct {
	name string
	d    *kongdriver.Driver
	inst *kongdriver.Instance
	log  *pluginLog
	conn pluginConn // where it landed at start
	// watch is the node hosting the consumer of its KV watch at start: an ordered push
	// consumer, R1 in memory, which the server places on one of the bucket's peers.
	watch string
}

// pluginConn is a plugin's NATS connection as a node lists it.
type pluginConn struct {
	node string
	cid  uint64
	subs []string
}

// startPlugin runs the plugin with BLOCKWIRE_NATS_URL listing every node, until the test ends.
//
// nats.go shuffles the list and the server places the watch's consumer, so where the plugin's
// connection and its watch land is chance. The plugin is started again until want accepts
// the connection's node and the watch's node, so that the node the test shuts down carries
// what the test means it to.
func startPlugin(tb testing.TB, c *cluster, js jetstream.JetStream, name string, want func(conn, watch string) bool) *plugin {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := pluginConns(c)
	lb := &pluginLog{tb: tb, name: name}
	env := []string{
		"BLOCKWIRE_NATS_URL=" + c.URLs(nil),
		"BLOCKWIRE_ENFORCER_SNAPSHOT=" + filepath.Join(tb.TempDir(), "snapshot"),
		"BLOCKWIRE_ENFORCER_LOG_LEVEL=info",
	}
	// The watch-stall check is the test process's when set (BLOCKWIRE_ENFORCER_WATCH_CHECK=1h
	// all but switches it off, to reproduce the figures from before it): passed on explicitly,
	// last, so that nothing set above can override it.
	if v, ok := watchCheckEnv(); ok {
		env = append(env, envWatchCheck+"="+v)
	}
	d, err := kongdriver.Start(ctx, kongdriver.Config{Binary: pluginBinary(tb), Stdout: lb, Stderr: lb, Env: env})
	if err != nil {
		tb.Fatalf("start plugin %s: %v", name, err)
	}
	p := &plugin{name: name, d: d, log: lb}
	tb.Cleanup(func() {
		err := p.d.Close()
		p.log.stop()
		if err != nil {
			tb.Errorf("close plugin %s: %v", name, err)
		}
		if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
			tb.Errorf("plugin %s reported a data race", name)
		}
	})
	if p.inst, err = d.StartInstance(ctx, nil); err != nil {
		tb.Fatalf("start plugin %s instance: %v", name, err)
	}
	var seen []string
	for range 40 {
		p.awaitPlaced(tb, ctx, c, js, before)
		if want(p.conn.node, p.watch) {
			return p
		}
		seen = append(seen, p.conn.node+"/"+p.watch)
		// Not where it is wanted: kill it (no need for a clean stop) and start it again, as
		// Kong would restart a plugin server; the next event starts the instance again.
		if err := d.Kill(); err != nil {
			tb.Fatalf("kill plugin %s: %v", name, err)
		}
		for deadline := time.Now().Add(10 * time.Second); hasConn(pluginConns(c), p.conn); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				tb.Fatalf("plugin %s: a killed process's connection is still listed after 10s", name)
			}
		}
		before = pluginConns(c)
		if err := d.Restart(ctx); err != nil {
			tb.Fatalf("restart plugin %s: %v", name, err)
		}
		p.access(tb, bystanderIP)
	}
	tb.Fatalf("plugin %s never landed where wanted in 40 starts (connection/watch: %v)", name, seen)
	return nil
}

// envWatchCheck is the plugin's watch-stall check period (a Go duration, default 1s).
const envWatchCheck = "BLOCKWIRE_ENFORCER_WATCH_CHECK"

// watchCheckEnv is BLOCKWIRE_ENFORCER_WATCH_CHECK in the test process's environment, if set.
func watchCheckEnv() (string, bool) {
	return os.LookupEnv(envWatchCheck)
}

func hasConn(conns []pluginConn, pc pluginConn) bool {
	return slices.ContainsFunc(conns, func(o pluginConn) bool { return o.node == pc.node && o.cid == pc.cid })
}

// awaitPlaced waits until the plugin's connection (the one not in before) and its watch are
// on the cluster, and records where.
func (p *plugin) awaitPlaced(tb testing.TB, ctx context.Context, c *cluster, js jetstream.JetStream, before []pluginConn) {
	tb.Helper()
	p.conn, p.watch = pluginConn{}, ""
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, pc := range pluginConns(c) {
			if !hasConn(before, pc) {
				p.conn = pc
				p.watch = watchHost(ctx, js, pc.subs)
			}
		}
		if p.watch != "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("plugin %s: no connection with a watch after 30s (connection %+v):\n%s", p.name, p.conn, tail(p.log.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pluginConns lists the plugins' connections on the running nodes.
func pluginConns(c *cluster) []pluginConn {
	var out []pluginConn
	for _, n := range c.up() {
		srv := n.server()
		if srv == nil {
			continue
		}
		cz, err := srv.Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == "noname-prevention" {
				out = append(out, pluginConn{node: n.name, cid: ci.Cid, subs: ci.Subs})
			}
		}
	}
	return out
}

// watchHost is the node hosting the bucket's push consumer that delivers to one of subs.
func watchHost(ctx context.Context, js jetstream.JetStream, subs []string) string {
	s, err := js.Stream(ctx, "KV_"+names.WithDefaults().BlocksBucket)
	if err != nil {
		return ""
	}
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		if ci.Config.DeliverSubject != "" && slices.Contains(subs, ci.Config.DeliverSubject) && ci.Cluster != nil {
			return ci.Cluster.Leader
		}
	}
	return ""
}

// watchNow is the node hosting the consumer of the plugin's watch now, as the server lists it
// for the connection the plugin started with ("" when that connection or its watch is not listed).
func (p *plugin) watchNow(ctx context.Context, c *cluster, js jetstream.JetStream) string {
	for _, pc := range pluginConns(c) {
		if pc.node == p.conn.node && pc.cid == p.conn.cid {
			return watchHost(ctx, js, pc.subs)
		}
	}
	return ""
}

// node is where the plugin's connection is now: the node it started on while that one is up,
// else the one plugin connection not accounted for by others ("" while reconnecting).
func (p *plugin) node(c *cluster, others ...*plugin) string {
	conns := pluginConns(c)
	if hasConn(conns, p.conn) {
		return p.conn.node
	}
	for _, pc := range conns {
		if !slices.ContainsFunc(others, func(o *plugin) bool { return o.conn.node == pc.node && o.conn.cid == pc.cid }) {
			return pc.node
		}
	}
	return ""
}

// access runs the access phase for a request from ip; status 0 means allowed.
func (p *plugin) access(tb testing.TB, ip string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := p.inst.Access(ctx, kongdriver.Request{ClientIP: ip, Path: "/login"})
	if err != nil {
		tb.Fatalf("access from %s: %v", ip, err)
	}
	if res.Allowed {
		return 0
	}
	return res.Status
}
