package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// monitor samples, every few milliseconds, what a failover disturbs, and notes when each part
// recovered: new leaders for the stream, the bucket and the consumer; each replica's and the
// plugin's connection on a live node; each consumer's first incident applied after the
// shutdown. Leaders are asked through a connection to the surviving nodes only, in their own
// goroutine, so that a look-up waiting on the dead node delays nothing else.
type monitor struct {
	c        *cluster
	replicas []*replica
	plugins  []*plugin

	mu        sync.Mutex
	cur       *event
	started   time.Time
	baseline  []float64   // applied per replica when the monitor started
	firstEver []time.Time // per replica: its first incident applied after that

	wg   sync.WaitGroup
	quit chan struct{}
	once sync.Once
}

// event is one failover as the monitor saw it; zero times are "not yet".
type event struct {
	k      int
	victim string
	at     time.Time
	js     jetstream.JetStream // on the surviving nodes
	nc     *nats.Conn

	// just before the shutdown
	ledStream, ledBucket, ledConsumer, ledMeta bool
	onVictim                                   []bool // per replica
	pluginOnVictim                             []bool
	appliedAt                                  []float64

	// recoveries, guarded by monitor.mu
	streamLeader, bucketLeader, consumerLeader time.Time
	newStream, newBucket, newConsumer          string
	reconnected, firstApplied                  []time.Time
	reconnectedTo                              []string
	pluginBack                                 []time.Time
	pluginTo                                   []string
}

const sampleEvery = 5 * time.Millisecond

func startMonitor(c *cluster, replicas []*replica, plugins []*plugin) *monitor {
	m := &monitor{c: c, replicas: replicas, plugins: plugins, quit: make(chan struct{}), started: time.Now(),
		firstEver: make([]time.Time, len(replicas))}
	for _, r := range replicas {
		m.baseline = append(m.baseline, r.applied())
	}
	m.wg.Add(2)
	go m.sampleLocal()
	go m.sampleLeaders()
	return m
}

func (m *monitor) stop() {
	m.once.Do(func() { close(m.quit) })
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil && m.cur.nc != nil {
		m.cur.nc.Close()
	}
}

// failover records the state just before victim is shut down and starts watching the recovery.
func (m *monitor) failover(t *testing.T, k int, victim *node, js jetstream.JetStream) *event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := names.WithDefaults()
	ev := &event{k: k, victim: victim.name}
	// Any answer will do, but an answer it must be (waitGroup retries, and fails when none comes).
	s := waitGroup(t, js, n.IncidentStream, func(groupInfo) bool { return true })
	b := waitGroup(t, js, "KV_"+n.BlocksBucket, func(groupInfo) bool { return true })
	ev.ledStream, ev.ledBucket = s.Leader == victim.name, b.Leader == victim.name
	ev.ledConsumer = consumerLeader(ctx, js) == victim.name
	if srv := victim.server(); srv != nil {
		ev.ledMeta = srv.JetStreamIsLeader()
	}
	ev.pluginOnVictim, ev.pluginBack, ev.pluginTo = make([]bool, len(m.plugins)), make([]time.Time, len(m.plugins)), make([]string, len(m.plugins))
	for i, p := range m.plugins {
		ev.pluginOnVictim[i] = p.node(m.c, m.others(p)...) == victim.name
	}
	r := len(m.replicas)
	ev.onVictim, ev.appliedAt = make([]bool, r), make([]float64, r)
	ev.reconnected, ev.firstApplied, ev.reconnectedTo = make([]time.Time, r), make([]time.Time, r), make([]string, r)
	for i, rep := range m.replicas {
		ev.onVictim[i] = rep.node() == victim.name
		ev.appliedAt[i] = rep.applied()
	}
	var live []string
	for _, o := range m.c.up() {
		if o != victim {
			live = append(live, o.URL())
		}
	}
	nc, err := nats.Connect(strings.Join(live, ","), nats.Name("cluster-monitor"), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("monitor: connect to the surviving nodes: %v", err)
	}
	ev.nc = nc
	if ev.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ev.at = time.Now()
	m.mu.Lock()
	if m.cur != nil && m.cur.nc != nil {
		m.cur.nc.Close()
	}
	m.cur = ev
	m.mu.Unlock()
	return ev
}

// others is every plugin but p.
func (m *monitor) others(p *plugin) []*plugin {
	var out []*plugin
	for _, o := range m.plugins {
		if o != p {
			out = append(out, o)
		}
	}
	return out
}

func (m *monitor) current() *event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// sampleLocal watches what this process can see without asking the cluster.
func (m *monitor) sampleLocal() {
	defer m.wg.Done()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-m.quit:
			return
		case <-t.C:
		}
		now := time.Now()
		for i, r := range m.replicas {
			if applied := r.applied(); applied > m.baseline[i] {
				m.mu.Lock()
				if m.firstEver[i].IsZero() {
					m.firstEver[i] = now
				}
				m.mu.Unlock()
			}
		}
		ev := m.current()
		if ev == nil {
			continue
		}
		for i, r := range m.replicas {
			node, applied := r.node(), r.applied()
			m.mu.Lock()
			if ev.reconnected[i].IsZero() && node != "" && node != ev.victim {
				ev.reconnected[i], ev.reconnectedTo[i] = now, node
			}
			if ev.firstApplied[i].IsZero() && applied > ev.appliedAt[i] {
				ev.firstApplied[i] = now
			}
			m.mu.Unlock()
		}
		live := 0
		for _, pc := range pluginConns(m.c) {
			if pc.node != ev.victim {
				live++
			}
		}
		for i, p := range m.plugins {
			if node := p.node(m.c, m.others(p)...); live == len(m.plugins) && node != "" && node != ev.victim {
				m.mu.Lock()
				if ev.pluginBack[i].IsZero() {
					ev.pluginBack[i], ev.pluginTo[i] = now, node
				}
				m.mu.Unlock()
			}
		}
	}
}

// sampleLeaders asks the surviving nodes who leads the stream, the bucket and the consumer.
func (m *monitor) sampleLeaders() {
	defer m.wg.Done()
	n := names.WithDefaults()
	for {
		select {
		case <-m.quit:
			return
		case <-time.After(4 * sampleEvery):
		}
		ev := m.current()
		if ev == nil {
			continue
		}
		m.mu.Lock()
		done := !ev.streamLeader.IsZero() && !ev.bucketLeader.IsZero() && !ev.consumerLeader.IsZero()
		m.mu.Unlock()
		if done {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, serr := streamGroup(ctx, ev.js, n.IncidentStream)
		b, berr := streamGroup(ctx, ev.js, "KV_"+n.BlocksBucket)
		c := consumerLeader(ctx, ev.js)
		cancel()
		now := time.Now()
		m.mu.Lock()
		if serr == nil && s.Leader != "" && s.Leader != ev.victim && ev.streamLeader.IsZero() {
			ev.streamLeader, ev.newStream = now, s.Leader
		}
		if berr == nil && b.Leader != "" && b.Leader != ev.victim && ev.bucketLeader.IsZero() {
			ev.bucketLeader, ev.newBucket = now, b.Leader
		}
		if c != "" && c != ev.victim && ev.consumerLeader.IsZero() {
			ev.consumerLeader, ev.newConsumer = now, c
		}
		m.mu.Unlock()
	}
}

// wait returns once the stream, the bucket and the consumer have leaders on live nodes and
// every replica and the plugin are connected to a live node. It fails after 30 s in which none
// of that moved.
func (m *monitor) wait(t *testing.T, ev *event) {
	t.Helper()
	var last string
	moved := time.Now()
	for {
		m.mu.Lock()
		var missing []string
		if ev.streamLeader.IsZero() {
			missing = append(missing, "a stream leader")
		}
		if ev.bucketLeader.IsZero() {
			missing = append(missing, "a bucket leader")
		}
		if ev.consumerLeader.IsZero() {
			missing = append(missing, "a consumer leader")
		}
		for i, r := range m.replicas {
			if ev.reconnected[i].IsZero() {
				missing = append(missing, "replica "+r.name+"'s connection")
			}
		}
		for i, p := range m.plugins {
			if ev.pluginBack[i].IsZero() {
				missing = append(missing, "plugin "+p.name+"'s connection")
			}
		}
		m.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		if now := strings.Join(missing, ", "); now != last {
			last, moved = now, time.Now()
		}
		if time.Since(moved) > 30*time.Second {
			t.Fatalf("after shutting down %s, still no %s for 30s", ev.victim, last)
		}
		time.Sleep(sampleEvery)
	}
}

// reportStart adds when each replica first applied an incident of the burst.
func (m *monitor) reportStart(fig *figures) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range m.replicas {
		at := "never"
		if !m.firstEver[i].IsZero() {
			at = fmt.Sprintf("%.3fs", m.firstEver[i].Sub(m.started).Seconds())
		}
		fig.note("replica %s applied its first incident of the burst %s after the burst started", r.name, at)
	}
}

// report adds what the monitor saw of ev to fig.
func (m *monitor) report(fig *figures, ev *event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	since := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%.3fs", max(0, at.Sub(ev.at)).Seconds())
	}
	led := func(b bool) string {
		if b {
			return "moved from the shut-down node"
		}
		return "was elsewhere"
	}
	fig.note("failover %d: incident stream leader %s after %s (%s); bucket leader %s after %s (%s); consumer leader %s after %s (%s); meta leader %s",
		ev.k, ev.newStream, since(ev.streamLeader), led(ev.ledStream), ev.newBucket, since(ev.bucketLeader), led(ev.ledBucket),
		ev.newConsumer, since(ev.consumerLeader), led(ev.ledConsumer), led(ev.ledMeta))
	for i, r := range m.replicas {
		conn := "stayed on " + ev.reconnectedTo[i]
		if ev.onVictim[i] {
			conn = fmt.Sprintf("reconnected to %s after %s", ev.reconnectedTo[i], since(ev.reconnected[i]))
		}
		fig.note("failover %d: replica %s %s; first incident applied %s after the shutdown",
			ev.k, r.name, conn, since(ev.firstApplied[i]))
	}
	for i, p := range m.plugins {
		conn := "stayed on " + ev.pluginTo[i]
		if ev.pluginOnVictim[i] {
			conn = fmt.Sprintf("reconnected to %s after %s", ev.pluginTo[i], since(ev.pluginBack[i]))
		}
		fig.note("failover %d: plugin %s %s", ev.k, p.name, conn)
	}
}
