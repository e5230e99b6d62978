package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// Addresses the plugin is asked about: one blocked before each failure, one after, one never.
const bystanderIP = "203.0.113.250"

func probeIP(i int) string { return fmt.Sprintf("203.0.113.%d", 10+i) }

// scale is the size of a run: the compact one runs in `make test`, the soak with BLOCKWIRE_SOAK=1.
type scale struct {
	incidents int
	workers   int
	// killAt lists, as fractions of the burst accepted, when a node is shut down and which
	// asset's leader it is. A node shut down is restarted (and caught up) before the next: two
	// of three nodes down at once is no quorum, and then nothing can be stored by design.
	killAt []failover
}

type failover struct {
	at     float64
	leader string // "stream" (the incident stream) or "bucket" (the blocks bucket)
}

func scaleFromEnv() (scale, string) {
	if os.Getenv("BLOCKWIRE_SOAK") == "1" {
		return scale{incidents: 20000, workers: 16, killAt: []failover{{1.0 / 3, "stream"}, {2.0 / 3, "bucket"}}}, "soak"
	}
	return scale{incidents: 2000, workers: 8, killAt: []failover{{1.0 / 3, "stream"}}}, "compact"
}

// The 3-node scenario: the incident stream's leader is shut down in the middle of a burst.
func TestLeaderLossMidBurst(t *testing.T) {
	sc, mode := scaleFromEnv()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	fig := &figures{mode: mode}
	t.Cleanup(func() { t.Log(fig.String()) })
	if v, ok := watchCheckEnv(); ok {
		fig.note("plugins run with %s=%s (the test process's; default 1s)", envWatchCheck, v)
	} else {
		fig.note("plugins run with the default %s (1s)", envWatchCheck)
	}

	setupStart := time.Now()
	c := startCluster(t)
	_, js := c.connect(t, "cluster-test")
	provisionR3(t, c, js)
	fig.add("cluster formed and provisioned at R3", time.Since(setupStart))

	// The node to be shut down is set up to carry, at once, the incident stream's leadership,
	// replica a's connection, plugin "conn"'s connection (which must reconnect elsewhere and
	// resume its watch) and plugin "watch"'s watch consumer (whose own connection stays up on
	// another node, so only the watch's heartbeats can tell it the consumer is gone). Replica b
	// is on another node. The watch consumer is placed by the server, so that plugin is
	// started first, and the stream's leadership moved to wherever its watch landed.
	pw := startPlugin(t, c, js, "watch", func(conn, watch string) bool { return conn != watch })
	doomed := c.byName(pw.watch)
	moveLeader(t, c, js, names.WithDefaults().IncidentStream, doomed)
	var other *node
	for _, n := range c.nodes {
		if n != doomed {
			other = n
			break
		}
	}
	replicas := []*replica{
		startReplica(t, c, "a", doomed, 0),
		startReplica(t, c, "b", other, 0),
	}
	pc := startPlugin(t, c, js, "conn", func(conn, _ string) bool { return conn == doomed.name })
	plugins := []*plugin{pc, pw}
	fig.note("placement: stream leader %s; replica a on %s, replica b on %s; plugin conn on %s (watch on %s), plugin watch on %s (watch on %s)",
		doomed.name, replicas[0].node(), replicas[1].node(), pc.conn.node, pc.watch, pw.conn.node, pw.watch)
	fig.add("placement done (plugins started until placed, leadership moved)", time.Since(setupStart))

	post := newPoster()
	var (
		mu  sync.Mutex
		all []sent // every incident and its 202, for the zero-loss check
	)
	record := func(incs []schemas.Incident, res []accepted) {
		mu.Lock()
		defer mu.Unlock()
		for i := range incs {
			all = append(all, sent{inc: incs[i], acc: res[i]})
		}
	}
	sendOne := func(r *replica, inc schemas.Incident) accepted {
		t.Helper()
		body, _ := json.Marshal(inc)
		acc, attempts, sentAt, err := post.post(ctx, r.url, body)
		if err != nil {
			t.Fatalf("post %s: %v", inc.ID, err)
		}
		a := accepted{Accepted: acc, via: slices.Index(replicas, r), at: time.Now(), sent: sentAt, attempts: attempts}
		record([]schemas.Incident{inc}, []accepted{a})
		return a
	}

	// The plugin enforces a block from before any failure.
	kv, err := js.KeyValue(ctx, names.WithDefaults().BlocksBucket)
	if err != nil {
		t.Fatal(err)
	}
	sendOne(replicas[0], probeIncident(0))
	for _, p := range plugins {
		waitDenied(t, p, kv, probeIP(0), replicas)
		if st := p.access(t, bystanderIP); st != 0 {
			t.Fatalf("plugin %s: bystander refused with %d before any failure", p.name, st)
		}
	}

	incidents := generate("burst", 0, sc.incidents)
	burstCtx, stopBurst := context.WithCancel(ctx)
	bu := startBurst(burstCtx, post, replicas, incidents, sc.workers)
	t.Cleanup(func() { stopBurst(); <-bu.done }) // a failed test leaves no sender behind
	burstStart := time.Now()
	mon := startMonitor(c, replicas, plugins)
	t.Cleanup(mon.stop)
	var events []*event

	for k, fo := range sc.killAt {
		threshold := int64(fo.at * float64(sc.incidents))
		for bu.count.Load() < threshold {
			select {
			case <-bu.done:
				t.Fatalf("the burst ended (%v) before %d incidents were accepted", bu.err, threshold)
			case <-time.After(5 * time.Millisecond):
			}
		}
		asset := names.WithDefaults().IncidentStream
		if fo.leader == "bucket" {
			asset = "KV_" + names.WithDefaults().BlocksBucket
		}
		victim := c.byName(waitGroup(t, js, asset, func(g groupInfo) bool { return g.Leader != "" }).Leader)
		if k == 0 {
			victim = placeFirstVictim(t, ctx, c, js, asset, doomed, replicas[0], pc, pw)
		}
		ev := mon.failover(t, k+1, victim, js)
		fig.note("failover %d: shutting down %s, leader of %s, at %d/%d accepted, %.3fs into the burst; replica a on %s, b on %s; plugin connections on %v, watch consumers on %v",
			k+1, victim.name, asset, bu.count.Load(), sc.incidents, time.Since(burstStart).Seconds(),
			replicas[0].node(), replicas[1].node(), pluginNodes(c), watchHosts(ctx, js))
		c.Shutdown(victim)
		events = append(events, ev)
		fig.add(fmt.Sprintf("failover %d: server shutdown took", k+1), time.Since(ev.at))

		// Blocked after the leader died: the plugin must learn it through the surviving nodes,
		// and keep what it had.
		live := replicas[1]
		if n := replicas[0].node(); n != victim.name && n != "" {
			live = replicas[0]
		}
		a := sendOne(live, probeIncident(k+1))
		fig.add(fmt.Sprintf("failover %d: probe block posted after the shutdown, accepted", k+1), a.at.Sub(ev.at))
		for _, p := range plugins {
			inBucket, denied := waitDenied(t, p, kv, probeIP(k+1), replicas)
			if p == plugins[0] {
				fig.add(fmt.Sprintf("failover %d: probe block in the bucket (after its 202)", k+1), inBucket.Sub(a.at))
			}
			fig.add(fmt.Sprintf("failover %d: plugin %s denies the probe (after it was in the bucket)", k+1, p.name), denied.Sub(inBucket))
			fig.add(fmt.Sprintf("failover %d: plugin %s denies the probe (after the shutdown)", k+1, p.name), denied.Sub(ev.at))
			for i := 0; i <= k; i++ {
				if st := p.access(t, probeIP(i)); st != 403 {
					t.Errorf("failover %d: plugin %s: %s, blocked before, now gets %d", k+1, p.name, probeIP(i), st)
				}
			}
			if st := p.access(t, bystanderIP); st != 0 {
				t.Errorf("failover %d: plugin %s: bystander refused with %d", k+1, p.name, st)
			}
		}
		mon.wait(t, ev)

		if k+1 < len(sc.killAt) {
			restartAt := time.Now()
			c.Restart(t, victim)
			waitAllCurrent(t, js)
			fig.add(fmt.Sprintf("failover %d: %s restarted and every asset back to 3 current peers", k+1, victim.name), time.Since(restartAt))
		}
	}

	if err := bu.wait(); err != nil {
		t.Fatalf("burst: %v", err)
	}
	record(incidents, bu.results)
	fig.add(fmt.Sprintf("burst of %d incidents posted (%d senders)", sc.incidents, sc.workers), time.Since(burstStart))
	fig.note("webhook answers while posting: %d × 503, %d × no answer (each retried until 202); slowest answer by status: %v",
		post.unavailable.Load(), post.transport.Load(), post.slowestAnswers())
	retried, most := 0, 0
	for _, r := range bu.results {
		if r.attempts > 1 {
			retried++
		}
		most = max(most, r.attempts)
	}
	fig.note("%d incidents of the burst needed more than one request (at most %d)", retried, most)
	for _, ev := range events {
		ingestAround(fig, ev, bu.results)
	}

	caught := time.Now()
	last := waitCaughtUp(t, js, replicas)
	fig.add("pipeline caught up, after the last 202 of the burst", time.Since(caught))
	fig.note("incident stream last sequence %d after the burst; %d deliveries were redeliveries", last, redelivered(t, js))

	// Both consumers keep consuming: more incidents until each replica applied some.
	fig.add("after the burst, until both replicas applied new incidents", keepConsuming(t, ctx, post, js, replicas, record))
	for _, e := range c.logs.consumeEvents() {
		fig.note("%s at %+.3fs from the burst's start: %s", e.who, e.at.Sub(burstStart).Seconds(), e.line)
	}
	mon.stop()
	mon.reportStart(fig)
	for _, ev := range events {
		mon.report(fig, ev)
	}

	checkZeroLoss(t, ctx, js, all, fig)
	for _, r := range replicas {
		fig.note("replica %s: %.0f incidents applied, %.0f retries", r.name, r.applied(), r.retries())
		for _, e := range r.stops() {
			fig.note("replica %s: its consumer's Run ended at %+.3fs from the burst's start (serve would exit; restarted): %v",
				r.name, e.at.Sub(burstStart).Seconds(), e.err)
		}
		// serve exits when its consumer's Run ends: the restart above only lets the run finish.
		if st := r.stops(); len(st) > 0 {
			t.Errorf("replica %s: its consumer stopped unexpectedly %d time(s) (serve would exit), first at %+.3fs from the burst's start: %v",
				r.name, len(st), st[0].at.Sub(burstStart).Seconds(), st[0].err)
		}
	}
	for _, p := range plugins {
		if st := p.access(t, bystanderIP); st != 0 {
			t.Errorf("plugin %s: bystander refused with %d at the end", p.name, st)
		}
		for i := range len(sc.killAt) + 1 {
			if st := p.access(t, probeIP(i)); st != 403 {
				t.Errorf("plugin %s: at the end, %s gets %d, want 403", p.name, probeIP(i), st)
			}
		}
	}
}

// placeFirstVictim makes sure the first node shut down carries what the setup put on doomed:
// the leadership of asset (the incident stream), replica a's connection, plugin "conn"'s
// connection and plugin "watch"'s watch consumer, and returns it; it fails, with the placement,
// when it does not.
//
// The setup placed them all on doomed, but only the connections and the watch stay there by
// themselves (nothing moves a connection while its node is up, and the watch's consumer, R1 in
// memory, moves only if the plugin resumes the watch). The stream's leadership can move on its
// own (an election under load), so it is moved back to doomed, as the setup did, before the
// check.
func placeFirstVictim(t *testing.T, ctx context.Context, c *cluster, js jetstream.JetStream, asset string,
	doomed *node, ra *replica, pc, pw *plugin) *node {
	t.Helper()
	if g := waitGroup(t, js, asset, func(g groupInfo) bool { return g.Leader != "" }); g.Leader != doomed.name {
		t.Logf("failover 1: %s is led by %s, not %s as placed: moving it back", asset, g.Leader, doomed.name)
		moveLeader(t, c, js, asset, doomed)
	}
	leader := waitGroup(t, js, asset, func(g groupInfo) bool { return g.Leader != "" }).Leader
	// The watch's host, as the server lists it now (the listing can miss under load: asked again).
	var watch string
	for range 50 {
		if watch = pw.watchNow(ctx, c, js); watch != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ra0, pcNode := ra.node(), pc.node(c, pw)
	if leader != doomed.name || ra0 != doomed.name || pcNode != doomed.name || watch != doomed.name {
		t.Fatalf("failover 1: the node to shut down does not carry what the scenario needs; placed on %s, now: "+
			"%s leader %s, replica %s on %s, plugin %s connection on %s, plugin %s watch on %s (at start %s)",
			doomed.name, asset, leader, ra.name, ra0, pc.name, pcNode, pw.name, watch, pw.watch)
	}
	return doomed
}

// provisionR3 provisions through a broker like serve's and checks that every asset really has
// three replicas, all current.
func provisionR3(t *testing.T, c *cluster, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	b, err := broker.Open(ctx, broker.Config{URL: c.URLs(nil), Names: names, Name: "provision"})
	if err != nil {
		t.Fatalf("open broker on %s: %v", c.URLs(nil), err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Provision(ctx); err != nil {
		t.Fatalf("provision at R3: %v", err)
	}
	if _, err := b.Blocks(ctx); err != nil {
		t.Fatal(err)
	}
	waitAllCurrent(t, js)
}

// assets are the JetStream streams blockwire provisions (the bucket's is KV_<bucket>).
func assets() []string {
	n := names.WithDefaults()
	return []string{n.IncidentStream, n.AuditStream, n.DLQStream, "KV_" + n.BlocksBucket}
}

// waitAllCurrent waits until every asset is configured at 3 replicas, has a leader and 3
// current peers on 3 distinct nodes.
func waitAllCurrent(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	for _, s := range assets() {
		g := waitGroup(t, js, s, func(g groupInfo) bool { return g.Leader != "" && g.Current == 3 })
		if g.Replicas != 3 {
			t.Fatalf("%s is configured with %d replicas, want 3", s, g.Replicas)
		}
		if p := slices.Compact(slices.Sorted(slices.Values(g.Peers))); len(p) != 3 {
			t.Fatalf("%s has peers %v, want 3 distinct nodes", s, g.Peers)
		}
	}
}

// watchHosts lists where the bucket's push consumers (the KV watches: here only the plugin's) live.
func watchHosts(ctx context.Context, js jetstream.JetStream) []string {
	s, err := js.Stream(ctx, "KV_"+names.WithDefaults().BlocksBucket)
	if err != nil {
		return nil
	}
	var hosts []string
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		if ci.Config.DeliverSubject != "" && ci.Cluster != nil {
			hosts = append(hosts, ci.Cluster.Leader)
		}
	}
	return hosts
}

// moveLeader makes node to the leader of stream, asking the current leader to step down in its
// favour (a no-op when it already leads).
func moveLeader(t *testing.T, c *cluster, js jetstream.JetStream, stream string, to *node) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		g := waitGroup(t, js, stream, func(g groupInfo) bool { return g.Leader != "" && g.Current == 3 })
		if g.Leader == to.name {
			return
		}
		if attempt > 10 {
			t.Fatalf("%s: leadership did not move to %s in 10 step-downs (leader %s)", stream, to.name, g.Leader)
		}
		nc, err := nats.Connect(c.URLs(nil), nats.Name("cluster-test-stepdown"))
		if err != nil {
			t.Fatal(err)
		}
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to.name)
		msg, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(req), 5*time.Second)
		nc.Close()
		if err != nil {
			t.Logf("step down %s in favour of %s: %v", stream, to.name, err)
			continue
		}
		var resp struct {
			Success bool `json:"success"`
			Error   any  `json:"error"`
		}
		_ = json.Unmarshal(msg.Data, &resp)
		if !resp.Success {
			t.Logf("step down %s in favour of %s: %s", stream, to.name, msg.Data)
		}
		waitGroup(t, js, stream, func(g groupInfo) bool { return g.Leader != "" && (g.Leader == to.name || !resp.Success) })
	}
}

// pluginNodes lists the nodes the plugins' connections are on.
func pluginNodes(c *cluster) []string {
	var out []string
	for _, pc := range pluginConns(c) {
		out = append(out, pc.node)
	}
	return out
}

// consumerLeader is the node leading the durable consumer "blockwire" ("" if unknown).
func consumerLeader(ctx context.Context, js jetstream.JetStream) string {
	cons, err := js.Consumer(ctx, names.WithDefaults().IncidentStream, "blockwire")
	if err != nil {
		return ""
	}
	info, err := cons.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// generate returns n incidents, each blocking entities no other incident names (so every
// accepted incident leaves its own keys in the bucket), for an hour.
func generate(prefix string, from, n int) []schemas.Incident {
	out := make([]schemas.Incident, 0, n)
	hour := int64(3600)
	for i := from; i < from+n; i++ {
		inc := schemas.Incident{ID: fmt.Sprintf("%s-%06d", prefix, i), Type: schemas.TypeBlock,
			Title: "cluster failover", Severity: schemas.SeverityHigh, DurationSeconds: &hour}
		inc.Entities = append(inc.Entities, schemas.Entity{Type: schemas.EntityIP,
			Value: fmt.Sprintf("198.%d.%d.%d", 18+i/65536, i/256%256, i%256)})
		if i%3 == 0 {
			inc.Entities = append(inc.Entities, schemas.Entity{Type: schemas.EntityHeader, Name: "X-Api-Key", Value: fmt.Sprintf("%s-key-%d", prefix, i)})
		}
		if i%5 == 0 {
			inc.Entities = append(inc.Entities, schemas.Entity{Type: schemas.EntityJWT, Claim: "sub", Value: fmt.Sprintf("%s-user-%d", prefix, i)})
		}
		if i%7 == 0 {
			inc.Entities = append(inc.Entities, schemas.Entity{Type: schemas.EntityCIDR, Value: fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)})
		}
		out = append(out, inc)
	}
	return out
}

// probeIncident blocks probeIP(i) for an hour.
func probeIncident(i int) schemas.Incident {
	hour := int64(3600)
	return schemas.Incident{ID: fmt.Sprintf("probe-%d", i), Type: schemas.TypeBlock, Title: "plugin probe",
		DurationSeconds: &hour, Entities: []schemas.Entity{{Type: schemas.EntityIP, Value: probeIP(i)}}}
}

// waitDenied polls the plugin until a request from ip is refused with 403, and returns when,
// and when the block was first seen in the bucket (the pipeline's part of the delay). It fails
// only when the pipeline (the consumers' applied counts) has not moved for 60 s and the plugin
// still allows ip: a watch whose consumer died with its node is recreated by nats.go after two
// missed 5 s heartbeats, and again every 10 s while that fails.
func waitDenied(t *testing.T, p *plugin, kv jetstream.KeyValue, ip string, replicas []*replica) (inBucket, denied time.Time) {
	t.Helper()
	key, err := consumer.KeyFor(schemas.Entity{Type: schemas.EntityIP, Value: ip}, nil)
	if err != nil {
		t.Fatal(err)
	}
	progress := func() float64 { return replicas[0].applied() + replicas[1].applied() }
	last, moved := progress(), time.Now()
	for {
		if inBucket.IsZero() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, err := kv.Get(ctx, key); err == nil {
				inBucket = time.Now()
			}
			cancel()
		}
		st := p.access(t, ip)
		if st == 403 {
			if inBucket.IsZero() {
				inBucket = time.Now()
			}
			return inBucket, time.Now()
		}
		if st != 0 {
			t.Fatalf("request from %s: status %d, want 403 or allowed", ip, st)
		}
		if now := progress(); now != last {
			last, moved = now, time.Now()
		}
		if time.Since(moved) > time.Minute {
			t.Fatalf("the plugin still allows %s (in the bucket: %v), and the pipeline has not moved for 60s\nplugin log:\n%s",
				ip, !inBucket.IsZero(), tail(p.log.String(), 40))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCaughtUp waits until the durable consumer acknowledged everything in the incident stream,
// and returns the stream's last sequence. Redeliveries of messages (or acks) lost in flight come
// only after the consumer's AckWait (10 s by default), and a pull lost with a node is renewed
// only after two missed heartbeats (2 × 15 s), so it gives up after 45 s in which nothing moved.
func waitCaughtUp(t *testing.T, js jetstream.JetStream, replicas []*replica) uint64 {
	t.Helper()
	stream := names.WithDefaults().IncidentStream
	var last string
	moved := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		state, err := func() (string, error) {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return "", err
			}
			cons, err := js.Consumer(ctx, stream, "blockwire")
			if err != nil {
				return "", err
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				return "", err
			}
			lastSeq := s.CachedInfo().State.LastSeq
			if ci.AckFloor.Stream >= lastSeq && ci.NumAckPending == 0 && ci.NumPending == 0 {
				return fmt.Sprint(lastSeq), nil
			}
			return "", fmt.Errorf("last seq %d, ack floor %d, %d ack pending, %d pending, %d redelivered",
				lastSeq, ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending, ci.NumRedelivered)
		}()
		cancel()
		if err == nil {
			var seq uint64
			fmt.Sscan(state, &seq)
			return seq
		}
		if err.Error() != last {
			last, moved = err.Error(), time.Now()
		}
		if time.Since(moved) > 45*time.Second {
			t.Fatalf("the pipeline did not catch up and nothing moved for 45s: %s", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redelivered is how many messages the durable consumer has delivered more than once.
func redelivered(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, names.WithDefaults().IncidentStream, "blockwire")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ci.NumRedelivered
}

// keepConsuming posts more incidents, a few at a time over both webhooks, until each replica's
// consumer applied some of them: after a failover both keep consuming. A replica that applied
// nothing while others did for 45 s fails it (nats.go re-pulls after two missed heartbeats of
// its pull, 2 × 15 s, so a stalled pull must have recovered by then). It returns how long it
// took for both to have applied something.
func keepConsuming(t *testing.T, ctx context.Context, post *poster, js jetstream.JetStream, replicas []*replica,
	record func([]schemas.Incident, []accepted)) time.Duration {
	t.Helper()
	start := time.Now()
	base := []float64{replicas[0].applied(), replicas[1].applied()}
	for round := 0; ; round++ {
		var idle []string
		for i, r := range replicas {
			if r.applied() <= base[i] {
				idle = append(idle, r.name)
			}
		}
		if len(idle) == 0 {
			break
		}
		if time.Since(start) > 45*time.Second {
			t.Fatalf("after the failover, replica %v applied nothing for 45s while incidents kept coming: applied a %.0f → %.0f, b %.0f → %.0f",
				idle, base[0], replicas[0].applied(), base[1], replicas[1].applied())
		}
		incs := generate(fmt.Sprintf("after-%d", round), 100000+round*20, 20)
		b := startBurst(ctx, post, replicas, incs, 4)
		if err := b.wait(); err != nil {
			t.Fatalf("post after the failover: %v", err)
		}
		record(incs, b.results)
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	waitCaughtUp(t, js, replicas)
	return took
}
