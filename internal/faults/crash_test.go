package faults

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serveConfig says where a `blockwire serve` listens and which NATS it uses.
type serveConfig struct {
	dataDir            string
	httpPort, natsPort int
	natsURL            string // external NATS; "" embeds one
}

func (c serveConfig) api() string { return fmt.Sprintf("http://127.0.0.1:%d", c.httpPort) }

// startServe runs `blockwire serve` and waits until /readyz answers 200.
func startServe(t *testing.T, name string, c serveConfig) *proc {
	t.Helper()
	args := []string{"serve", "--http-addr", fmt.Sprintf("127.0.0.1:%d", c.httpPort), "--log-format", "json"}
	if c.natsURL != "" {
		args = append(args, "--nats-url", c.natsURL)
	} else {
		args = append(args, "--data-dir", c.dataDir, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", c.natsPort))
	}
	p := startProc(t, name, binary(t, "blockwire"), []string{"BLOCKWIRE_WEBHOOK_TOKEN=" + webhookToken}, args...)
	waitHTTPReady(t, p, c.api())
	return p
}

// TestCrash kills `blockwire serve` (and the NATS server it embeds) with SIGKILL in the middle
// of a burst of incidents posted by many senders, restarts it on the same data directory and
// ports, and checks that every incident answered 202 is in the log and applied exactly once.
//
// The senders behave like a webhook client that retries: a request that got no answer (refused,
// reset) or a 503 is sent again, byte for byte, until it gets a 202. An incident stored just
// before the kill but never answered is then answered "duplicate" after the restart, and must
// still be stored and applied once.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	var (
		n       = profile(3000, 20000)
		killAt  = n * 2 / 5 // incidents answered 202 before the kill
		senders = 32
	)
	c := serveConfig{dataDir: t.TempDir(), httpPort: freePort(t), natsPort: freePort(t)}
	b, _ := newBurst(t, "crash", n, 0)
	binary(t, "blockwire") // build before anything is timed
	first := startServe(t, "serve-1", c)

	ps := newPoster(c.api(), senders)
	var answered atomic.Int64 // incidents answered 202
	work := make(chan int)
	stop := make(chan struct{}) // closed when the test gives up
	var wg sync.WaitGroup
	go func() {
		defer close(work)
		for i := range n {
			select {
			case work <- i:
			case <-stop:
				return
			}
		}
	}()
	for range senders {
		wg.Go(func() {
			for i := range work {
				for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
					a := ps.post(i, b.bodies[i])
					if a.status == http.StatusAccepted {
						answered.Add(1)
						break
					}
					if a.status != 0 && a.status != http.StatusServiceUnavailable {
						break // refused for good: recorded, and fails the test below
					}
					select { // a client's retry backoff, not a wait for a condition
					case <-time.After(wait):
					case <-stop:
						return
					}
				}
			}
		})
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-sendersDone
	})

	// Progress is 202 answers: wait for them, failing only when none come for stallLimit.
	waitAnswered := func(want int64, until <-chan struct{}) bool {
		t.Helper()
		last, moved := answered.Load(), time.Now()
		for {
			select {
			case <-until:
				return true
			default:
			}
			got := answered.Load()
			if got >= want {
				return true
			}
			if got != last {
				last, moved = got, time.Now()
			}
			if time.Since(moved) > stallLimit {
				t.Fatalf("%d of %d incidents answered 202, none for %s: %s", got, n, stallLimit, count(ps.snapshot()))
			}
			time.Sleep(time.Millisecond)
		}
	}
	started := time.Now()
	waitAnswered(int64(killAt), nil)
	killedAt := time.Now()
	first.kill9(t)
	atKill := answered.Load()
	if atKill >= int64(n) {
		// Not a crash mid-burst: everything was answered before the kill, and the rest of the
		// test would check a restart after a finished burst.
		t.Errorf("SIGKILL came after the burst: %d of %d incidents answered 202 at the kill, want fewer", atKill, n)
	}
	second := startServe(t, "serve-2", c)
	readyAt := time.Now()
	waitAnswered(int64(n), sendersDone)
	<-sendersDone
	sentAt := time.Now()

	r := newReader(t, fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort))
	last := r.lastSeq(t)
	r.waitConsumed(t, last)
	appliedAt := time.Now()
	st := r.state(t)

	attempts := ps.snapshot()
	all := count(attempts)
	seqs := acceptedSeqs(t, b, attempts)
	var inFlight, afterRestart int
	for _, a := range attempts {
		switch {
		case a.status == 0 && a.start.Before(killedAt) && !a.end.Before(killedAt):
			inFlight++
		case a.status == http.StatusAccepted && a.accepted.Duplicate:
			afterRestart++
		}
	}
	if all.other > 0 {
		t.Errorf("answers other than 202, 503 and no answer: %s", all)
	}
	if len(seqs) != n {
		t.Errorf("%d of %d incidents answered 202", len(seqs), n)
	}
	if len(st.stored) != n {
		t.Errorf("the stream holds %d incidents, want the %d sent", len(st.stored), n)
	}
	st.check(t, expectations(b, seqs))

	second.term(t, time.Minute)
	if second.err != nil {
		t.Errorf("serve after the crash exited with %v on SIGTERM, want 0", second.err)
	}

	t.Logf("FIGURES crash: %d incidents (%d entities, %d senders, race build %v); SIGKILL after %d answered 202 (%.1f s into the burst)",
		n, len(st.blocks), senders, raceEnabled, atKill, killedAt.Sub(started).Seconds())
	t.Logf("FIGURES crash: %s", all)
	t.Logf("FIGURES crash: %d requests in flight at the kill lost their answer; %d incidents stored before the kill were answered `duplicate` on retry",
		inFlight, afterRestart)
	t.Logf("FIGURES crash: down %.2f s (SIGKILL → restarted serve ready); burst done %.2f s after ready; consumer caught up %.2f s after the burst (%.2f s after ready)",
		readyAt.Sub(killedAt).Seconds(), sentAt.Sub(readyAt).Seconds(), appliedAt.Sub(sentAt).Seconds(), appliedAt.Sub(readyAt).Seconds())
	worst, slow := st.lag(5 * time.Second)
	t.Logf("FIGURES crash: stored → applied: at worst %.2f s; %d incidents waited more than 5 s (those in hand at the kill wait out the consumer's AckWait)",
		worst.Seconds(), slow)
	t.Logf("FIGURES crash: stream %d incidents (last seq %d), bucket %d blocks, audit: %s", len(st.stored), last, len(st.blocks), st.actions())
}
