package enforcer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwire/blockwire/internal/wait"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// maxBatch bounds how many watch entries one index change applies: under a burst, one
// copy of a shard serves many entries; alone, an entry is applied at once.
const maxBatch = 4096

// mirrorConfig configures one mirror of a bucket.
type mirrorConfig struct {
	loc           location
	snapshotPath  string        // "" = no snapshot
	snapshotEvery time.Duration // how often a changed index is written
	// rewatchAfter is the outage after which the watch starts over and reconciles. Shorter
	// outages resume where they stopped: the deletes and expiries of the gap are still in the
	// bucket as markers (they live broker.BlockMarkerTTL).
	rewatchAfter time.Duration
	sweepEvery   time.Duration
	// lagCheckEvery is how long the watch may stay idle before the stream is asked whether
	// it missed something (see lagCheck); default 1 s.
	lagCheckEvery time.Duration
	log           zerolog.Logger
}

// Mirror keeps one in-memory index of a bucket current: one NATS connection and one KV
// watch, shared by every plugin instance that reads that bucket.
type Mirror struct {
	cfg     mirrorConfig
	started time.Time

	cur         atomic.Pointer[index] // nil until the snapshot or the bucket gave a block list
	nc          atomic.Pointer[nats.Conn]
	synced      atomic.Bool   // the current watch delivered the bucket's whole state
	everSynced  atomic.Bool   // the index came from the bucket at least once
	knownAt     atomic.Int64  // Unix ms: when the index was last known to match the bucket
	lastChange  atomic.Int64  // Unix ms of the last change applied
	snapshotAt  atomic.Int64  // Unix ms of the last snapshot written or loaded; 0 never
	version     atomic.Uint64 // bumped by every change; the snapshot is written when it moved
	snapVersion atomic.Uint64
	invalid     atomic.Int64 // entries that could not be indexed
	discAt      atomic.Int64 // Unix ms of the last disconnect
	resumes     [nResumeReasons]atomic.Int64
	snapOnce    sync.Once // the snapshot is read at most once
	// snapshotRace, set only by tests, runs inside writeSnapshot between its reads of the
	// version and the index.
	snapshotRace func()

	// reconnected is signalled by every reconnect; outage holds the longest outage (ms) since
	// the watch last looked.
	reconnected chan struct{}
	outage      atomic.Int64
	done        chan struct{}
}

func newMirror(cfg mirrorConfig) *Mirror {
	if cfg.lagCheckEvery <= 0 {
		cfg.lagCheckEvery = time.Second
	}
	return &Mirror{cfg: cfg, started: time.Now(), reconnected: make(chan struct{}, 1), done: make(chan struct{})}
}

// current is the index requests use; nil before the first block list.
func (m *Mirror) current() *index { return m.cur.Load() }

// MirrorStatus is a mirror's state for metrics and logs.
type MirrorStatus struct {
	Synced        bool
	Connected     bool
	Entries       int64
	ByKind        [nKinds]int64
	Staleness     time.Duration // 0 while synced and connected
	LastUpdateAge time.Duration
	SnapshotAge   time.Duration // -1 when no snapshot was written or loaded
	Invalid       int64
	Resumes       [nResumeReasons]int64 // watches resumed after the last applied revision, by reason
}

// resumeReason is why a watch resumed after its last applied revision.
type resumeReason int

const (
	resumeReconnect resumeReason = iota // the connection came back after a short outage
	resumeStall                         // the watch's consumer stopped delivering (lagCheck)
	nResumeReasons
)

func (r resumeReason) String() string {
	if r == resumeStall {
		return "stall"
	}
	return "reconnect"
}

// Status reports the mirror's state at now.
func (m *Mirror) Status(now time.Time) MirrorStatus {
	nowMs := now.UnixMilli()
	st := MirrorStatus{SnapshotAge: -1, Invalid: m.invalid.Load()}
	for i := range st.Resumes {
		st.Resumes[i] = m.resumes[i].Load()
	}
	if nc := m.nc.Load(); nc != nil {
		st.Connected = nc.IsConnected()
	}
	st.Synced = m.synced.Load() && st.Connected
	if x := m.cur.Load(); x != nil {
		for i := range st.ByKind {
			st.ByKind[i] = x.counts[i].Load()
			st.Entries += st.ByKind[i]
		}
	}
	age := func(ms int64) time.Duration { return time.Duration(nowMs-ms) * time.Millisecond }
	switch known := m.knownAt.Load(); {
	case st.Synced:
	case known == 0:
		st.Staleness = now.Sub(m.started)
	default:
		st.Staleness = age(known)
	}
	if lc := m.lastChange.Load(); lc != 0 {
		st.LastUpdateAge = age(lc)
	} else {
		st.LastUpdateAge = now.Sub(m.started)
	}
	if sa := m.snapshotAt.Load(); sa != 0 {
		st.SnapshotAge = age(sa)
	}
	return st
}

// run keeps the mirror current until ctx ends, then writes a last snapshot.
func (m *Mirror) run(ctx context.Context) {
	defer close(m.done)
	if m.cfg.snapshotPath != "" {
		m.loadSnapshot()
	}
	nc, err := m.connect()
	if err != nil {
		// Only a bad option (an unreadable creds file) fails here: an unreachable server is
		// retried in the background. Keep serving the snapshot, if any.
		m.cfg.log.Error().Err(err).Msg("cannot connect to nats; enforcing the snapshot only")
		<-ctx.Done()
		return
	}
	m.nc.Store(nc)
	snapDone := make(chan struct{})
	go func() {
		defer close(snapDone)
		m.snapshotLoop(ctx)
	}()
	m.syncLoop(ctx, nc)
	<-snapDone
	m.writeSnapshot(true)
	nc.Close()
}

func (m *Mirror) connect() (*nats.Conn, error) {
	log := m.cfg.log
	opts := []nats.Option{
		nats.Name("noname-prevention"),
		nats.RetryOnFailedConnect(true), // start (and enforce the snapshot) while NATS is down
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// Jitter so a fleet of Kong nodes does not reconnect in lockstep.
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.Timeout(5 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server_version", nc.ConnectedServerVersion()).Msg("connected to nats")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			now := time.Now().UnixMilli()
			m.discAt.Store(now)
			if m.synced.Load() {
				m.knownAt.Store(now)
			}
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected; enforcing the last known blocks")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			gap := time.Since(time.UnixMilli(m.discAt.Load()))
			log.Info().Dur("outage", gap).Msg("nats reconnected")
			for {
				old := m.outage.Load()
				if gap.Milliseconds() <= old || m.outage.CompareAndSwap(old, gap.Milliseconds()) {
					break
				}
			}
			select {
			case m.reconnected <- struct{}{}:
			default: // already signalled
			}
		}),
	}
	if m.cfg.loc.creds != "" {
		opts = append(opts, nats.UserCredentials(m.cfg.loc.creds))
	}
	nc, err := nats.Connect(m.cfg.loc.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(m.cfg.loc.url), err)
	}
	return nc, nil
}

// syncLoop binds the bucket and watches it, starting over after a failure or a long outage.
func (m *Mirror) syncLoop(ctx context.Context, nc *nats.Conn) {
	js, err := jetstream.New(nc)
	if err != nil {
		m.cfg.log.Error().Err(err).Msg("open jetstream")
		<-ctx.Done()
		return
	}
	delay := 100 * time.Millisecond
	var lastWarn time.Time
	for ctx.Err() == nil {
		err := m.bindAndWatch(ctx, js)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = 100 * time.Millisecond
			continue
		}
		if time.Since(lastWarn) > 30*time.Second {
			m.cfg.log.Warn().Err(err).Msg("watching the blocks bucket failed; retrying")
			lastWarn = time.Now()
		}
		_ = wait.Sleep(ctx, delay)
		delay = min(2*delay, 5*time.Second)
	}
}

func (m *Mirror) bindAndWatch(ctx context.Context, js jetstream.JetStream) error {
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kv, err := js.KeyValue(bctx, m.cfg.loc.bucket)
	cancel()
	if err != nil {
		return fmt.Errorf("bind bucket %s: %w", m.cfg.loc.bucket, err)
	}
	return m.watch(ctx, kv)
}

var errWatchClosed = errors.New("kv watcher stopped")

// watch builds a fresh index from the bucket's current state, swaps it in when the watch's
// initial values are complete (the nil marker), and then applies live changes to it. The
// swap is the reconcile: a block deleted while this process was away, and still in its
// snapshot, is simply not in the new index. Until the swap, requests keep using the
// previous index (the snapshot, or the last watch's).
//
// After a reconnect, or when lagCheck finds the watch's consumer gone quiet, the watch resumes
// right after the last revision it applied: nats.go's own recovery waits for missed
// heartbeats (about 20 s without new blocks after a server restart, 11–16 s when the server
// holding the consumer dies). After a long outage, or when the bucket's stream is no longer
// the one watched (deleted, created again, restored from a backup: see lagCheck), it returns,
// and the caller starts over and reconciles.
func (m *Mirror) watch(ctx context.Context, kv watchedBucket) error {
	start := time.Now()
	// The stream's identity, read before the watch starts: a stream replaced in between
	// looks replaced to the first probe, which costs a reload, never a stale list.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ident := readStream(sctx, kv)
	cancel()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket: %w", err)
	}
	defer func() { _ = w.Stop() }() // whichever watcher is current
	// Not synced once this watch ends, whatever the next one finds (the bucket may be gone).
	// knownAt stays: the disconnect handler or the replaced branch below set it.
	defer m.synced.Store(false)
	m.synced.Store(false)
	wr := newWriter()
	building := true
	sweep := time.NewTicker(m.cfg.sweepEvery)
	defer sweep.Stop()
	lag := time.NewTicker(m.cfg.lagCheckEvery)
	defer lag.Stop()
	check := newLagCheck(m.cfg.lagCheckEvery, ident.created)
	lastEntry := time.Now()
	updates := w.Updates()
	ops := make([]op, 0, 64)
	var lastRev uint64
	resume := func(why resumeReason) error {
		nw, err := m.resume(ctx, kv, lastRev+1, why)
		if err != nil {
			return err
		}
		_ = w.Stop()
		w, updates = nw, nw.Updates()
		m.synced.Store(false) // until the resumed watch catches up
		lastEntry = time.Now()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.reconnected:
			gap := time.Duration(m.outage.Swap(0)) * time.Millisecond
			if building || gap > m.cfg.rewatchAfter {
				m.cfg.log.Info().Dur("outage", gap).Msg("reloading the bucket to reconcile")
				return nil
			}
			// The server may have come back with another stream: the bucket deleted and
			// created again, or its store restored from a backup.
			if s := m.readStreamRetrying(ctx, kv); !s.answered || check.replaced(s, lastRev) {
				m.cfg.log.Warn().Uint64("applied", lastRev).Uint64("stream_last", s.lastSeq).Bool("answered", s.answered).
					Msg("the bucket's stream is not the one watched before the outage; reloading the bucket")
				return nil
			}
			if err := resume(resumeReconnect); err != nil {
				return err
			}
		case now := <-lag.C:
			if !building {
				check.maybeProbe(ctx, kv, now, lastEntry)
			}
		case st := <-check.answers():
			switch check.judge(st, lastRev, time.Now()) {
			case lagStalled:
				m.cfg.log.Warn().Uint64("applied", lastRev).Uint64("stream_last", st.lastSeq).
					Msg("the watch stopped delivering; resuming it")
				if err := resume(resumeStall); err != nil {
					return err
				}
			case lagReplaced:
				m.cfg.log.Warn().Uint64("applied", lastRev).Uint64("stream_last", st.lastSeq).Bool("missing", st.missing).
					Msg("the bucket's stream is not the one watched; reloading the bucket")
				m.unsync()
				return nil
			}
		case <-sweep.C:
			if !building {
				wr.sweep(time.Now().UnixMilli())
			}
		case e, ok := <-updates:
			if !ok {
				return errWatchClosed
			}
			lastEntry = time.Now()
			ops = ops[:0]
			marker, closed := m.collect(e, updates, &ops, &lastRev)
			now := lastEntry.UnixMilli()
			if len(ops) > 0 {
				if err := wr.apply(ops, now); err != nil {
					m.invalid.Add(1)
					m.cfg.log.Warn().Err(err).Msg("skipped blocks that cannot be indexed")
				}
				m.version.Add(1)
				m.lastChange.Store(now)
			}
			if marker {
				if building {
					building = false
					wr.published()
					m.cur.Store(wr.idx)
					m.everSynced.Store(true)
					m.version.Add(1)
					m.cfg.log.Info().Int64("entries", wr.idx.entries()).Dur("took", time.Since(start)).
						Msg("block list synced from the bucket")
				}
				m.synced.Store(true)
				m.knownAt.Store(now)
				lastRev = check.settled(lastRev)
			}
			if closed {
				return errWatchClosed
			}
		}
	}
}

// unsync marks the mirror not synced, its list last known to match the bucket now (the
// bucket was replaced since the last probe, a second or so ago).
func (m *Mirror) unsync() {
	if m.synced.Swap(false) {
		m.knownAt.Store(time.Now().UnixMilli())
	}
}

// readStreamRetrying reads the bucket's stream, retrying for a while when it does not answer
// (JetStream may still be starting after a server restart); a missing stream is an answer.
func (m *Mirror) readStreamRetrying(ctx context.Context, kv watchedBucket) streamState {
	deadline := time.Now().Add(10 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s := readStream(sctx, kv)
		cancel()
		if s.answered || s.missing || ctx.Err() != nil || time.Now().After(deadline) {
			return s
		}
		_ = wait.Sleep(ctx, 200*time.Millisecond)
	}
}

// resume watches the bucket from revision rev on, retrying while JetStream comes back.
func (m *Mirror) resume(ctx context.Context, kv watchedBucket, rev uint64, why resumeReason) (jetstream.KeyWatcher, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := kv.WatchAll(ctx, jetstream.ResumeFromRevision(rev))
		if err == nil {
			m.resumes[why].Add(1)
			m.cfg.log.Info().Uint64("revision", rev).Stringer("reason", why).Msg("watch resumed")
			return w, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("resume watch at revision %d: %w", rev, err)
		}
		_ = wait.Sleep(ctx, 200*time.Millisecond)
	}
}

// collect turns e and whatever else is already waiting into ops, up to maxBatch, stopping
// after the initial-values marker so that the swap happens exactly there.
func (m *Mirror) collect(e jetstream.KeyValueEntry, updates <-chan jetstream.KeyValueEntry, ops *[]op, lastRev *uint64) (marker, closed bool) {
	for {
		if e == nil {
			return true, false
		}
		*lastRev = max(*lastRev, e.Revision())
		if o, err := entryOp(e); err != nil {
			m.invalid.Add(1)
			m.cfg.log.Warn().Err(err).Str("key", e.Key()).Msg("skipped a bucket entry")
		} else {
			*ops = append(*ops, o)
		}
		if len(*ops) >= maxBatch {
			return false, false
		}
		var ok bool
		select {
		case e, ok = <-updates:
			if !ok {
				return false, true
			}
		default:
			return false, false
		}
	}
}

// snapshotLoop writes the index when it changed, every snapshotEvery.
func (m *Mirror) snapshotLoop(ctx context.Context) {
	if m.cfg.snapshotPath == "" {
		return
	}
	t := time.NewTicker(m.cfg.snapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.writeSnapshot(false)
		}
	}
}
