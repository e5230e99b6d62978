package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/kongdriver"
	"github.com/blockwire/blockwire/schemas"
)

// The log lines the scenario waits for (enforcer/mirror.go and enforcer/snapshot.go).
const (
	logSynced   = "block list synced from the bucket"
	logSnapshot = "snapshot written"
)

// crashSize is the scenario's size: compact in make test, long with BLOCKWIRE_SOAK=1.
type crashSize struct {
	blocks, conns, cycles int
	perPhase              int // answers per connection before the kill, while held, after the reconcile
}

func pluginCrashSize() crashSize {
	if os.Getenv("BLOCKWIRE_SOAK") == "1" {
		return crashSize{blocks: 200_000, conns: 64, cycles: 5, perPhase: 100}
	}
	return crashSize{blocks: 10_000, conns: 8, cycles: 1, perPhase: 20}
}

// freeAddr is the i-th address that is never blocked: 198.18.0.0/16.
func freeAddr(i int) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0xc6120000+uint32(i&0xffff))
	return netip.AddrFrom4(b).String()
}

// crashCycle is one kill and restart: bnew is blocked and bdel unblocked while the plugin
// is down, so the snapshot (bnew allowed, bdel refused) can be told from the bucket.
type crashCycle struct {
	n          int
	bnew, bdel string
	restartAt  time.Time    // when Restart was called; read only once restarted is set
	released   atomic.Bool  // set just before the proxy releases the plugin's NATS connection
	reconciled atomic.Int64 // Unix ns once both changes were seen enforced; 0 before
	first403   atomic.Int64 // Unix ns of the first 403 answered to a request sent after restartAt
	restarted  atomic.Bool  // restartAt is valid
}

// Answer classes of the load.
const (
	classBlocked = iota // a block in the bucket from start to end
	classFree           // never blocked
	classNew            // the cycle's bnew
	classDel            // the cycle's bdel
	nClasses
)

var classNames = [nClasses]string{"blocked", "free", "B_new", "B_del"}

// crashLoad sends access events from conns goroutines until stopped, checking every answer.
type crashLoad struct {
	inst         *kongdriver.Instance
	ctx          context.Context
	blocks       int // the load's blocked addresses are benchAddr(firstBlocked .. blocks-1)
	firstBlocked int // below it: the cycles' B_del
	cycle        atomic.Pointer[crashCycle]
	up           atomic.Bool // false from just before the kill until Restart returned

	answered   atomic.Int64
	failedDown atomic.Int64
	failedUp   atomic.Int64
	refused    [nClasses]atomic.Int64
	allowed    [nClasses]atomic.Int64
	other      [nClasses]atomic.Int64

	mu         sync.Mutex
	violations []string
	nViolated  int

	stop chan struct{}
	wg   sync.WaitGroup
}

func (l *crashLoad) violate(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nViolated++
	if len(l.violations) < 20 {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	}
}

func (l *crashLoad) violated() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nViolated > 0
}

// report fails the test with the violations seen.
func (l *crashLoad) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
	if l.nViolated > len(l.violations) {
		t.Errorf("... and %d more violations", l.nViolated-len(l.violations))
	}
}

// failNow stops the test at once when the load saw a violation, rather than waiting for a
// state the broken plugin may never reach.
func (l *crashLoad) failNow(t *testing.T, stop func()) {
	t.Helper()
	if l.violated() {
		stop()
		l.report(t)
		t.FailNow()
	}
}

func (l *crashLoad) run(seed uint64) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		cs := l.cycle.Load()
		class, ip := classFree, ""
		switch r := rng.IntN(100); {
		case r < 45:
			class, ip = classBlocked, benchAddr(l.firstBlocked+rng.IntN(l.blocks-l.firstBlocked)).String()
		case r < 90:
			ip = freeAddr(rng.IntN(1 << 16))
		case r < 95:
			class, ip = classNew, cs.bnew
		default:
			class, ip = classDel, cs.bdel
		}
		upAtStart := l.up.Load()
		sent := time.Now()
		res, err := l.inst.Access(l.ctx, kongdriver.Request{ClientIP: ip})
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			if !upAtStart || !l.up.Load() {
				// Kong answers these with an error while the plugin server is gone.
				l.failedDown.Add(1)
			} else {
				l.failedUp.Add(1)
				l.violate("%s %s: event failed while the plugin was up: %v", classNames[class], ip, err)
			}
			time.Sleep(time.Millisecond) // no busy loop against a missing socket
			continue
		}
		l.answered.Add(1)
		released := cs.released.Load() // read after the answer: the answer was made before it
		refused := res.Status == 403 && !res.Allowed
		switch {
		case refused:
			l.refused[class].Add(1)
		case res.Allowed:
			l.allowed[class].Add(1)
		default:
			l.other[class].Add(1)
		}
		if refused && cs.restarted.Load() && sent.After(cs.restartAt) && (class == classBlocked || class == classDel) {
			cs.first403.CompareAndSwap(0, time.Now().UnixNano())
		}
		afterReconcile := func() bool { rec := cs.reconciled.Load(); return rec != 0 && sent.UnixNano() > rec }
		describe := func() string {
			when := "before the kill"
			if cs.restarted.Load() {
				when = fmt.Sprintf("sent %s after the restart began", sent.Sub(cs.restartAt).Round(time.Microsecond))
			}
			return fmt.Sprintf("cycle %d, %s %s: status %d allowed %v (body %s), %s", cs.n, classNames[class], ip,
				res.Status, res.Allowed, res.Body, when)
		}
		switch class {
		case classBlocked:
			if !refused {
				l.violate("a blocked address was not refused: %s", describe())
			}
		case classFree:
			if !res.Allowed {
				l.violate("an unblocked address was refused: %s", describe())
			}
		case classNew:
			if !released && !res.Allowed {
				l.violate("B_new refused before the watch could know it: %s", describe())
			}
			if afterReconcile() && !refused {
				l.violate("B_new allowed after the reconcile: %s", describe())
			}
		case classDel:
			if !released && !refused {
				l.violate("B_del allowed before the reconcile: %s", describe())
			}
			if afterReconcile() && !res.Allowed {
				l.violate("B_del refused after the reconcile: %s", describe())
			}
		}
	}
}

// logEntry is one JSON line of the plugin's log, and where it ends in the log.
type logEntry struct {
	fields map[string]any
	end    int
}

// logEntriesFrom parses the complete JSON lines of the plugin's log from offset from on.
func logEntriesFrom(text string, from int) []logEntry {
	var out []logEntry
	for pos := from; pos < len(text); {
		i := strings.IndexByte(text[pos:], '\n')
		if i < 0 {
			break
		}
		line := text[pos : pos+i]
		pos += i + 1
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var f map[string]any
		if json.Unmarshal([]byte(line), &f) == nil {
			out = append(out, logEntry{fields: f, end: pos})
		}
	}
	return out
}

// waitLog waits for a log line after offset from with message msg that match accepts, and
// returns the offset after it. The bound only keeps a broken plugin from hanging the test.
func waitLog(t *testing.T, p *plugin, from int, msg string, match func(map[string]any) bool) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for _, e := range logEntriesFrom(p.log.String(), from) {
			if e.fields["message"] == msg && (match == nil || match(e.fields)) {
				return e.end
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the plugin's log after 2 minutes", msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func entriesAre(n int) func(map[string]any) bool {
	return func(f map[string]any) bool { v, ok := f["entries"].(float64); return ok && int(v) == n }
}

// waitUntil polls cond; the bound only keeps a broken plugin from hanging the test.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after 2 minutes for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The scenario 4, a plugin crash: the plugin server is killed with SIGKILL under
// load; restarted, it enforces its snapshot before its watch has finished, then reconciles
// with the bucket. A proxy in front of NATS holds the restarted plugin's connections, so
// "before the watch has finished" is a fact of the test, not a race it hopes to win; the
// bucket changes while the plugin is down, so the snapshot's answers can be told from the
// bucket's.
func TestPluginCrash(t *testing.T) {
	size := pluginCrashSize()
	ctx, cancel := context.WithCancel(context.Background()) // the soak runs longer than testContext's bound
	if dl, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), dl)
	}
	t.Cleanup(cancel)
	s := newStack(t, false, consumer.Guardrails{})
	fillStart := time.Now()
	if err := fillBlocks(ctx, s.b.JetStream(), s.b.Names().BlocksBucket, size.blocks); err != nil {
		t.Fatal(err)
	}
	fillTook := time.Since(fillStart)
	proxy := newFaultProxy(t, strings.TrimPrefix(s.nats.URL(), "nats://"))
	snap := filepath.Join(t.TempDir(), "snap")
	p := startPlugin(t, "plugin", pluginEnv(proxy.url(), snap,
		"BLOCKWIRE_ENFORCER_SNAPSHOT_INTERVAL=200ms",
		"BLOCKWIRE_ENFORCER_LOG_LEVEL=info", // not a line per blocked request
	)...)
	inst := p.instance(t, nil) // fail open, Kong's default

	// Enforcing every block, and a snapshot of every block written.
	startedAt := time.Now()
	waitFor(t, inst, kongdriver.Request{ClientIP: benchAddr(size.blocks - 1).String()}, 403)
	waitLog(t, p, 0, logSnapshot, entriesAre(size.blocks))
	t.Logf("filled %d blocks in %s; first plugin synced and snapshotted in %s", size.blocks, fillTook.Round(time.Millisecond),
		time.Since(startedAt).Round(time.Millisecond))

	l := &crashLoad{inst: inst, ctx: ctx, blocks: size.blocks, firstBlocked: size.cycles, stop: make(chan struct{})}
	l.up.Store(true)
	// Each cycle c adds benchAddr(blocks+c) and deletes benchAddr(c).
	l.cycle.Store(&crashCycle{n: 1, bnew: benchAddr(size.blocks).String(), bdel: benchAddr(0).String()})
	l.wg.Add(size.conns)
	for i := range size.conns {
		go l.run(uint64(i) + 1)
	}
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(l.stop); l.wg.Wait() }) }
	t.Cleanup(stopLoad) // before the plugin is closed: cleanups run last first

	type cycleFigures struct {
		first403, synced, releaseToSynced, restart time.Duration
		held, answeredHeld                         int64
	}
	var figs []cycleFigures
	for c := range size.cycles {
		cs := l.cycle.Load()
		bnewKey, err := schemas.BlockKey(schemas.KeyParts{Kind: schemas.EntityIP, Value: cs.bnew})
		if err != nil {
			t.Fatal(err)
		}
		bdelKey, err := schemas.BlockKey(schemas.KeyParts{Kind: schemas.EntityIP, Value: cs.bdel})
		if err != nil {
			t.Fatal(err)
		}

		// Under load: every connection has had answers before the kill.
		base := l.answered.Load()
		waitUntil(t, "answers before the kill", func() bool { return l.answered.Load() >= base+int64(size.perPhase*size.conns) })
		l.up.Store(false)
		if err := p.d.Kill(); err != nil {
			t.Fatal(err)
		}

		// While it is down: NATS unreachable for the next process, and the bucket moves on.
		proxy.hold()
		heldBefore := proxy.held.Load()
		s.put(t, schemas.KeyParts{Kind: schemas.EntityIP, Value: cs.bnew}, time.Now().Add(time.Hour))
		if err := s.kv.Delete(ctx, bdelKey); err != nil {
			t.Fatal(err)
		}

		logFrom := len(p.log.String())
		cs.restartAt = time.Now()
		cs.restarted.Store(true)
		if err := p.d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		restartTook := time.Since(cs.restartAt)
		l.up.Store(true)

		// Enforcing from the snapshot while the watch cannot have finished, under the load.
		atRestart := l.answered.Load()
		waitUntil(t, "a 403 from the restarted plugin while NATS is held (is the snapshot loaded?)", func() bool {
			return cs.first403.Load() != 0 || l.violated()
		})
		l.failNow(t, stopLoad)
		first403 := time.Duration(cs.first403.Load() - cs.restartAt.UnixNano())
		waitUntil(t, "the restarted plugin to reach NATS through the held proxy", func() bool { return proxy.parkedNow() > 0 })
		waitUntil(t, "answers while NATS is held", func() bool {
			return l.answered.Load() >= atRestart+int64(size.perPhase*size.conns) || l.violated()
		})
		l.failNow(t, stopLoad)
		if res := access(t, inst, kongdriver.Request{ClientIP: cs.bdel}); res.Status != 403 || res.Allowed {
			t.Errorf("cycle %d: B_del %s from the snapshot: status %d allowed %v, want 403", cs.n, cs.bdel, res.Status, res.Allowed)
		}
		if res := access(t, inst, kongdriver.Request{ClientIP: cs.bnew}); !res.Allowed {
			t.Errorf("cycle %d: B_new %s before the watch: status %d, want allowed (the snapshot's state)", cs.n, cs.bnew, res.Status)
		}
		if res := access(t, inst, kongdriver.Request{ClientIP: benchAddr(size.blocks - 1).String()}); res.Status != 403 || res.Allowed {
			t.Errorf("cycle %d: a blocked address from the snapshot: status %d allowed %v, want 403", cs.n, res.Status, res.Allowed)
		}
		if strings.Contains(p.log.String()[logFrom:], logSynced) {
			t.Fatalf("cycle %d: the watch synced while NATS was held: the proxy leaked", cs.n)
		}
		held := proxy.held.Load() - heldBefore
		answeredHeld := l.answered.Load() - atRestart

		// Release: the watch finishes and reconciles.
		cs.released.Store(true)
		releasedAt := time.Now()
		proxy.release()
		syncEnd := waitLog(t, p, logFrom, logSynced, nil)
		syncedAt := time.Now()
		waitFor(t, inst, kongdriver.Request{ClientIP: cs.bnew}, 403)
		waitFor(t, inst, kongdriver.Request{ClientIP: cs.bdel}, 0)
		cs.reconciled.Store(time.Now().UnixNano())
		// The new process snapshots the bucket's state again (the next cycle restarts from it).
		waitLog(t, p, syncEnd, logSnapshot, entriesAre(size.blocks))
		if _, err := s.kv.Get(ctx, bnewKey); err != nil {
			t.Fatalf("B_new not in the bucket: %v", err)
		}

		f := cycleFigures{first403: first403, synced: syncedAt.Sub(cs.restartAt), releaseToSynced: syncedAt.Sub(releasedAt),
			restart: restartTook, held: held, answeredHeld: answeredHeld}
		figs = append(figs, f)
		t.Logf("FIGURES plugin-crash: cycle %d/%d: restart %s, restart to first 403 from the snapshot %s, "+
			"restart to synced %s (release to synced %s), %d requests answered while NATS was held, %d NATS connection(s) held",
			c+1, size.cycles, f.restart.Round(time.Millisecond), f.first403.Round(time.Millisecond),
			f.synced.Round(time.Millisecond), f.releaseToSynced.Round(time.Millisecond), f.answeredHeld, f.held)

		// Answers after the reconcile are checked against it before the next cycle.
		base = l.answered.Load()
		waitUntil(t, "answers after the reconcile", func() bool { return l.answered.Load() >= base+int64(size.perPhase*size.conns) })
		if c+1 < size.cycles {
			l.cycle.Store(&crashCycle{n: c + 2, bnew: benchAddr(size.blocks + c + 1).String(), bdel: benchAddr(c + 1).String()})
		}
	}
	stopLoad()

	var byClass []string
	for c := range nClasses {
		byClass = append(byClass, fmt.Sprintf("%s %d refused/%d allowed/%d other", classNames[c],
			l.refused[c].Load(), l.allowed[c].Load(), l.other[c].Load()))
	}
	t.Logf("answers: %s", strings.Join(byClass, ", "))
	var worst cycleFigures
	for _, f := range figs {
		worst.first403 = max(worst.first403, f.first403)
		worst.synced = max(worst.synced, f.synced)
		worst.releaseToSynced = max(worst.releaseToSynced, f.releaseToSynced)
	}
	t.Logf("FIGURES plugin-crash: %d blocks, %d connections, %d cycle(s); worst restart to first 403 from the snapshot %s, "+
		"worst restart to synced %s (release to synced %s); %d events failed while the plugin was down, "+
		"%d requests answered, %d failed while up, %d violations",
		size.blocks, size.conns, size.cycles, worst.first403.Round(time.Millisecond), worst.synced.Round(time.Millisecond),
		worst.releaseToSynced.Round(time.Millisecond), l.failedDown.Load(), l.answered.Load(), l.failedUp.Load(), l.nViolated)

	l.report(t)
	if l.refused[classBlocked].Load() == 0 || l.allowed[classFree].Load() == 0 {
		t.Errorf("the load saw no refused blocked address or no allowed free one: %s", strings.Join(byClass, ", "))
	}
}
