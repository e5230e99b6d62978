package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/schemas"
)

// natsServer is an external nats-server process with JetStream on a file store, restartable on
// the same port and store directory.
type natsServer struct {
	port     int
	storeDir string
	gen      int
	p        *proc
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{port: freePort(t), storeDir: t.TempDir()}
	n.start(t)
	return n
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	n.gen++
	n.p = startProc(t, fmt.Sprintf("nats-server-%d", n.gen), binary(t, "nats-server"), nil,
		"-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-js", "-sd", n.storeDir, "-n", "faults-nats")
	waitJetStream(t, n.p, n.url())
}

// plugin runs the Kong plugin through the driver, as Kong would, with one instance.
type plugin struct {
	d    *kongdriver.Driver
	inst *kongdriver.Instance
}

func startPlugin(t *testing.T, natsURL string) *plugin {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "noname-prevention.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, startupLimit)
	d, err := kongdriver.Start(ctx, kongdriver.Config{
		Binary: binary(t, "noname-prevention"),
		Env: []string{
			"BLOCKWIRE_NATS_URL=" + natsURL,
			"BLOCKWIRE_ENFORCER_SNAPSHOT=off", // what it enforces comes from memory only
			"BLOCKWIRE_ENFORCER_LOG_LEVEL=info",
		},
		Stdout: f, Stderr: f,
		StartTimeout: startupLimit,
	})
	if err != nil {
		f.Close()
		t.Fatalf("start the plugin: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close the plugin: %v", err)
		}
		f.Close()
		out, _ := os.ReadFile(logPath)
		if strings.Contains(string(out), "WARNING: DATA RACE") {
			t.Errorf("the plugin reported a data race:\n%s", out)
		} else if t.Failed() {
			t.Logf("plugin output (last 4 KiB):\n%s", tail(string(out), 4<<10))
		}
	})
	inst, err := d.StartInstance(ctx, nil) // as `POST /plugins name=noname-prevention`
	if err != nil {
		t.Fatalf("start a plugin instance: %v", err)
	}
	return &plugin{d: d, inst: inst}
}

// probe is one request through the plugin.
type probe struct {
	start, end time.Time
	status     int
	allowed    bool
	err        error
}

func (p *plugin) access(ip string) probe {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr := probe{start: time.Now()}
	res, err := p.inst.Access(ctx, kongdriver.Request{ClientIP: ip, Path: "/login"})
	pr.end, pr.err = time.Now(), err
	if err == nil {
		pr.status, pr.allowed = res.Status, res.Allowed
	}
	return pr
}

// waitDenied polls until a request from ip is refused with 403 and returns when that was.
func (p *plugin) waitDenied(t *testing.T, ip string) time.Time {
	t.Helper()
	deadline := time.Now().Add(stallLimit)
	for {
		pr := p.access(ip)
		if pr.err == nil && pr.status == http.StatusForbidden && !pr.allowed {
			return pr.end
		}
		if time.Now().After(deadline) {
			t.Fatalf("a request from %s is still not refused after %s: %+v", ip, stallLimit, pr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// postUntilAccepted sends one incident until it is answered 202, as a sender honouring
// Retry-After would (with a short pause instead of the advised seconds), and returns the answer.
func postUntilAccepted(t *testing.T, ps *poster, b *burst, i int) attempt {
	t.Helper()
	deadline := time.Now().Add(stallLimit)
	for {
		a := ps.post(i, b.bodies[i])
		if a.status == http.StatusAccepted {
			return a
		}
		if a.status != http.StatusServiceUnavailable && a.status != 0 || time.Now().After(deadline) {
			t.Fatalf("POST %s: %d %s", b.incidents[i].ID, a.status, a.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitKey polls the bucket until key is there and returns when it was seen.
func waitKey(t *testing.T, r *reader, key string) time.Time {
	t.Helper()
	kv, err := r.js.KeyValue(ctxFor(t, time.Minute), broker.DefaultBlocksBucket)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(stallLimit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := kv.Get(ctx, key)
		cancel()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("block %s not in the bucket after %s: %v", key, stallLimit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNATSOutage stops the external nats-server under a steady load of incidents, holds it down,
// and starts it again on the same port and store. Meanwhile `blockwire serve` must answer 503
// with Retry-After and never 202, the Kong plugin must keep refusing an address it had synced
// before the outage, and afterwards both must be back by themselves: a new incident is applied
// and enforced, and every incident answered 202 is in the log and applied once.
func TestNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	var (
		down   = profile(3*time.Second, 10*time.Second) // how long nats-server stays stopped
		rate   = profile(100, 200)                      // incidents sent per second
		before = profile(200, 1000)                     // 202 answers before the outage
		after  = profile(200, 2000)                     // 202 answers after the recovery
		// The pool: the load before and after, and a minute of it for the outage and recovery.
		pool = before + after + rate*int(down/time.Second+60)
	)
	const (
		senders   = 64
		blockedIP = "203.0.113.10" // blocked and synced before the outage
		laterIP   = "203.0.113.20" // blocked after it
		bystander = "203.0.113.30"
	)
	for _, name := range []string{"nats-server", "blockwire", "noname-prevention"} {
		binary(t, name) // build before anything is timed
	}
	load, next := newBurst(t, "outage", pool, 0)
	probes, _ := newBurst(t, "outage-probe", 2, next)
	for i, ip := range []string{blockedIP, laterIP} {
		probes.incidents[i].Entities = []schemas.Entity{{Type: schemas.EntityIP, Value: ip}}
		probes.bodies[i] = mustJSON(t, probes.incidents[i])
		key, err := consumer.KeyFor(probes.incidents[i].Entities[0], nil)
		if err != nil {
			t.Fatal(err)
		}
		probes.keys[i] = []string{key}
	}

	ns := startNATS(t)
	c := serveConfig{httpPort: freePort(t), natsURL: ns.url()}
	serve := startServe(t, "serve", c)
	r := newReader(t, ns.url())
	pl := startPlugin(t, ns.url())

	// The address blocked before the outage, enforced from the synced list.
	ps := newPoster(c.api(), senders)
	probeA := postUntilAccepted(t, ps, probes, 0)
	pl.waitDenied(t, blockedIP)
	if pr := pl.access(bystander); pr.err != nil || !pr.allowed {
		t.Fatalf("a bystander was not let through: %+v", pr)
	}

	// The steady load, one attempt per incident, and the plugin probed all along.
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		answered atomic.Int64
		sent     int
	)
	loadPoster := newPoster(c.api(), senders)
	wg.Go(func() {
		sem := make(chan struct{}, senders)
		var posts sync.WaitGroup
		defer posts.Wait()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := range pool {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			case <-stop:
				return
			}
			sent = i + 1
			posts.Go(func() {
				defer func() { <-sem }()
				if loadPoster.post(i, load.bodies[i]).status == http.StatusAccepted {
					answered.Add(1)
				}
			})
		}
	})
	var (
		probeMu sync.Mutex
		probed  []probe
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			pr := pl.access(blockedIP)
			probeMu.Lock()
			probed = append(probed, pr)
			probeMu.Unlock()
			time.Sleep(10 * time.Millisecond) // the probe's pace
		}
	})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(stopLoad)

	// waitAnswered waits for more 202s, failing only when none come for stallLimit.
	waitAnswered := func(want int64) {
		t.Helper()
		last, moved := answered.Load(), time.Now()
		for answered.Load() < want {
			if got := answered.Load(); got != last {
				last, moved = got, time.Now()
			}
			if time.Since(moved) > stallLimit {
				t.Fatalf("%d incidents answered 202, none for %s, want %d: %s", last, stallLimit, want, count(loadPoster.snapshot()))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitAnswered(int64(before))

	// The outage.
	termAt := time.Now()
	ns.p.term(t, time.Minute)
	downAt := time.Now()
	time.Sleep(down) // holds the outage; nothing waits for a condition here
	restartAt := time.Now()
	ns.start(t)
	upAt := time.Now()

	// Back by themselves: the webhook answers 202 again, a new block is applied and enforced.
	var recoveredAt time.Time
	for deadline := time.Now().Add(stallLimit); recoveredAt.IsZero(); time.Sleep(5 * time.Millisecond) {
		for _, a := range loadPoster.snapshot() {
			if a.status == http.StatusAccepted && a.start.After(restartAt) && (recoveredAt.IsZero() || a.end.Before(recoveredAt)) {
				recoveredAt = a.end
			}
		}
		if recoveredAt.IsZero() && time.Now().After(deadline) {
			t.Fatalf("no incident sent after the restart was answered 202 within %s: %s", stallLimit, count(loadPoster.snapshot()))
		}
	}
	probeB := postUntilAccepted(t, ps, probes, 1)
	inBucketAt := waitKey(t, r, probes.keys[1][0])
	enforcedAt := pl.waitDenied(t, laterIP)
	resumed := answered.Load()
	waitAnswered(resumed + int64(after))
	stopLoad()
	loadDoneAt := time.Now()

	last := r.lastSeq(t)
	catchUp := r.waitConsumed(t, last)
	st := r.state(t)

	// While nats-server was down (from its exit to its restart), every answer was a 503 with
	// Retry-After: in particular no 202, which would claim a store that cannot have happened.
	attempts := loadPoster.snapshot()
	var during, outside []attempt
	for _, a := range attempts {
		if !a.start.Before(downAt) && a.end.Before(restartAt) {
			during = append(during, a)
		} else {
			outside = append(outside, a)
		}
	}
	inOutage := count(during)
	if inOutage.attempts == 0 {
		t.Errorf("no request was sent and answered while nats-server was down")
	}
	if inOutage.unavailable != inOutage.attempts || inOutage.noRetryAfter > 0 {
		t.Errorf("while nats-server was down, want only 503 with Retry-After: %s", inOutage)
	}
	all := count(attempts)
	if all.other > 0 || all.transport > 0 {
		t.Errorf("answers other than 202 and 503: %s", all)
	}

	// Zero accepted incidents lost, none applied twice.
	seqs := acceptedSeqs(t, load, attempts)
	want := expectations(load, seqs)
	want = append(want,
		expect{id: probes.incidents[0].ID, seq: probeA.accepted.Seq, keys: probes.keys[0]},
		expect{id: probes.incidents[1].ID, seq: probeB.accepted.Seq, keys: probes.keys[1]})
	st.check(t, want)
	// A 503 tells the sender to retry; an incident it names may still have been stored (the
	// server stored it and went away before its ack arrived, or the client held the publish
	// while disconnected and sent it on reconnect). Harmless, since the retry is deduplicated,
	// but counted: when each such request ran, relative to nats-server's exit.
	unanswered := make(map[string]attempt)
	for _, a := range attempts {
		if a.status != http.StatusAccepted {
			unanswered[load.incidents[a.incident].ID] = a
		}
	}
	var storedAnyway []string
	for _, m := range st.stored {
		if a, ok := unanswered[m.id]; ok {
			storedAnyway = append(storedAnyway, fmt.Sprintf("%d from %+.3f s to %+.3f s, stored at %+.3f s",
				a.status, a.start.Sub(downAt).Seconds(), a.end.Sub(downAt).Seconds(), m.at.Sub(downAt).Seconds()))
		}
	}
	// But not a request made while nats-server was down (started after its exit, answered
	// before its restart): there was no server to store it, and serve's connection has no
	// reconnect buffer to hold the publish until the restart. A 503 for it that is stored
	// anyway would be a publish held and sent after its sender was told it failed.
	refusedWhileDown := make(map[string]attempt)
	for _, a := range during {
		if a.status == http.StatusServiceUnavailable {
			refusedWhileDown[load.incidents[a.incident].ID] = a
		}
	}
	for _, m := range st.stored {
		if a, ok := refusedWhileDown[m.id]; ok {
			t.Errorf("incident %s was answered 503 while nats-server was down (request from %+.3f s to %+.3f s after its exit; restart at %+.3f s), yet stored at %+.3f s",
				m.id, a.start.Sub(downAt).Seconds(), a.end.Sub(downAt).Seconds(), restartAt.Sub(downAt).Seconds(), m.at.Sub(downAt).Seconds())
		}
	}

	// The plugin refused the address blocked before the outage on every request, before, during
	// and after it.
	probeMu.Lock()
	defer probeMu.Unlock()
	var probesDown, notDenied int
	for _, pr := range probed {
		if !pr.start.Before(downAt) && pr.end.Before(restartAt) {
			probesDown++
		}
		if pr.err != nil || pr.allowed || pr.status != http.StatusForbidden {
			notDenied++
			if notDenied <= 5 {
				t.Errorf("a request from the blocked %s at %s (%.2f s after nats-server stopped) was not refused: status %d, allowed %v, err %v",
					blockedIP, pr.start.Format(time.RFC3339Nano), pr.start.Sub(downAt).Seconds(), pr.status, pr.allowed, pr.err)
			}
		}
	}
	if probesDown == 0 {
		t.Errorf("no request went through the plugin while nats-server was down")
	}

	serve.term(t, time.Minute)
	if serve.err != nil {
		t.Errorf("serve exited with %v on SIGTERM after the outage, want 0", serve.err)
	}

	worst, slow := st.lag(5 * time.Second)
	t.Logf("FIGURES outage: nats-server down %.2f s (SIGTERM → exit %.2f s, held %s, restart → JetStream answering %.2f s); load %d/s, %d incidents sent, race build %v",
		upAt.Sub(downAt).Seconds(), downAt.Sub(termAt).Seconds(), down, upAt.Sub(restartAt).Seconds(), rate, sent, raceEnabled)
	t.Logf("FIGURES outage: all: %s", all)
	t.Logf("FIGURES outage: while down: %s", inOutage)
	t.Logf("FIGURES outage: around it: %s", count(outside))
	t.Logf("FIGURES outage: %d incidents answered 503 were stored anyway: %s", len(storedAnyway), strings.Join(storedAnyway, "; "))
	t.Logf("FIGURES outage: webhook back %.2f s after the restart began (%.2f s after JetStream answered)",
		recoveredAt.Sub(restartAt).Seconds(), recoveredAt.Sub(upAt).Seconds())
	t.Logf("FIGURES outage: new block after the restart: 202 %.2f s after the restart began; in the bucket %.3f s after its 202, refused by the plugin %.3f s after its 202",
		probeB.end.Sub(restartAt).Seconds(), inBucketAt.Sub(probeB.end).Seconds(), enforcedAt.Sub(probeB.end).Seconds())
	t.Logf("FIGURES outage: plugin probes of the blocked address: %d, %d while nats-server was down, %d not refused", len(probed), probesDown, notDenied)
	t.Logf("FIGURES outage: consumer caught up %.2f s after the load stopped; stored → applied at worst %.2f s, %d incidents over 5 s",
		catchUp.Seconds(), worst.Seconds(), slow)
	t.Logf("FIGURES outage: stream %d incidents, bucket %d blocks, audit: %s (load stopped %s after the restart)",
		len(st.stored), len(st.blocks), st.actions(), loadDoneAt.Sub(restartAt).Round(time.Millisecond))
}
