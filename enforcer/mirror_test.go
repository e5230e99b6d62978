package enforcer

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/schemas"
)

// bucket is a provisioned blocks bucket on a test NATS server.
type bucket struct {
	srv *natstest.Server
	kv  jetstream.KeyValue
}

func newBucket(t *testing.T) *bucket {
	t.Helper()
	srv := natstest.Start(t)
	kv, err := natstest.Provisioned(t, srv.URL()).Blocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &bucket{srv: srv, kv: kv}
}

// put writes b as the consumer would.
func (bk *bucket) put(t *testing.T, b blk) string {
	t.Helper()
	o := b.op()
	key := b.key(t)
	blkv := schemas.Block{Kind: b.kind, Name: b.name, CreatedAt: time.Now().UTC(), ExpiresAt: time.UnixMilli(o.exp).UTC(), Source: schemas.SourceManual}
	if b.service != "" || b.route != "" {
		blkv.Scope = &schemas.Scope{Service: b.service, Route: b.route}
	}
	data, err := json.Marshal(blkv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bk.kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
	return key
}

func (bk *bucket) purge(t *testing.T, key string) {
	t.Helper()
	if err := bk.kv.Purge(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// startMirror runs a mirror of url until the test ends; the returned stop waits for it (and
// its last snapshot).
func startMirror(t *testing.T, url, snapshot string, mutate ...func(*mirrorConfig)) (*Mirror, func()) {
	t.Helper()
	cfg := mirrorConfig{
		loc: location{url: url, bucket: DefaultBucket}, snapshotPath: snapshot, snapshotEvery: time.Hour,
		rewatchAfter: time.Minute, sweepEvery: 20 * time.Millisecond, log: zerolog.New(zerolog.NewTestWriter(t)),
	}
	for _, f := range mutate {
		f(&cfg)
	}
	m := newMirror(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	go m.run(ctx)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-m.done
		}
	}
	t.Cleanup(stop)
	return m, stop
}

// blocks reports whether the mirror blocks b's value right now (unscoped blocks).
func blocks(m *Mirror, b blk) bool {
	x := m.current()
	if x == nil {
		return false
	}
	mt := matcher{x: x, p: x.plan.Load(), now: time.Now().UnixMilli()}
	switch b.kind {
	case schemas.EntityIP:
		_, ok := mt.matchAddr(netipMust(b.value))
		return ok
	case schemas.EntityConsumer:
		return mt.matchConsumer("", b.value)
	case schemas.EntityHeader:
		ns, ok := func() (uint32, bool) {
			for _, h := range mt.p.headers {
				if h.name == b.name {
					return h.id, true
				}
			}
			return 0, false
		}()
		return ok && mt.matchHash(ns, b.value, schemas.EntityHeader)
	}
	panic("blocks: kind not supported by the test helper")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMirrorFollowsBucket(t *testing.T) {
	bk := newBucket(t)
	a := blk{kind: "ip", value: "203.0.113.7"}
	bk.put(t, a)
	m, _ := startMirror(t, bk.srv.URL(), "")
	eventually(t, "synced with the existing block", func() bool { return m.Status(time.Now()).Synced && blocks(m, a) })

	h := blk{kind: "header", name: "x-api-key", value: "k"}
	hk := bk.put(t, h)
	eventually(t, "a new block applies", func() bool { return blocks(m, h) })
	if st := m.Status(time.Now()); st.Entries != 2 || st.ByKind[kindIndex("header")] != 1 || st.Staleness != 0 {
		t.Errorf("status %+v", st)
	}
	bk.purge(t, hk)
	eventually(t, "a purged block goes", func() bool { return !blocks(m, h) && len(m.current().plan.Load().headers) == 0 })
	if err := bk.kv.Delete(context.Background(), a.key(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted block goes", func() bool { return !blocks(m, a) })

	// expiresAt is enforced locally, whatever the server's TTL says (none here).
	soon := blk{kind: "consumer", value: "acme", exp: time.Now().Add(300 * time.Millisecond).UnixMilli()}
	bk.put(t, soon)
	eventually(t, "a short block applies", func() bool { return blocks(m, soon) })
	eventually(t, "a short block expires locally", func() bool { return !blocks(m, soon) })
	eventually(t, "the sweep drops it", func() bool { return !m.current().plan.Load().consumer })
}

func TestMirrorWaitsForTheBucket(t *testing.T) {
	srv := natstest.Start(t)
	m, _ := startMirror(t, srv.URL(), "")
	time.Sleep(50 * time.Millisecond) // give it a chance to (wrongly) claim a sync
	if m.current() != nil || m.Status(time.Now()).Synced {
		t.Fatal("synced without a bucket")
	}
	natstest.Provisioned(t, srv.URL())
	eventually(t, "synced once the bucket exists", func() bool { return m.Status(time.Now()).Synced })
}

// A node that restarts while NATS is down enforces its snapshot; once NATS is back, a block
// deleted meanwhile is dropped after the watch's initial values.
func TestSnapshotThenReconcile(t *testing.T) {
	bk := newBucket(t)
	keep, gone := blk{kind: "ip", value: "203.0.113.7"}, blk{kind: "consumer", value: "acme"}
	bk.put(t, keep)
	goneKey := bk.put(t, gone)
	snap := filepath.Join(t.TempDir(), "snap")

	m1, stop1 := startMirror(t, bk.srv.URL(), snap)
	eventually(t, "first sync", func() bool { return m1.Status(time.Now()).Synced && blocks(m1, gone) })
	stop1() // writes the last snapshot
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("no snapshot at shutdown: %v", err)
	}
	bk.purge(t, goneKey)

	m2, _ := startMirror(t, deadURL(t), snap)
	eventually(t, "the snapshot is enforced while NATS is unreachable", func() bool { return blocks(m2, keep) && blocks(m2, gone) })
	if st := m2.Status(time.Now()); st.Synced || st.SnapshotAge < 0 {
		t.Errorf("status %+v: want not synced, with a snapshot age", st)
	}

	m3, _ := startMirror(t, bk.srv.URL(), snap)
	eventually(t, "reconciled with the bucket", func() bool {
		return m3.Status(time.Now()).Synced && blocks(m3, keep) && !blocks(m3, gone)
	})
}

func TestSnapshotFileChecks(t *testing.T) {
	w := newTestWriter(t, blk{kind: "ip", value: "203.0.113.7"}, blk{kind: "cidr", value: "10.0.0.0/8", route: "r"},
		blk{kind: "header", name: "x-api-key", value: "k"}, blk{kind: "jwt", name: "sub", value: "u"},
		blk{kind: "jwt", value: "a.b.c"}, blk{kind: "consumer", value: "acme", service: "s"},
		// In the index (a put already expired never enters it), but expired at WrittenAt:
		// the snapshot's own filter must leave it out.
		blk{kind: "query", name: "q", value: "v", exp: time.Now().Add(time.Second).UnixMilli()})
	if c := w.idx.counts[kindIndex(schemas.EntityQuery)].Load(); c != 1 {
		t.Fatalf("%d query blocks indexed, want 1", c)
	}
	loc := location{url: "nats://user:pw@127.0.0.1:4222", bucket: DefaultBucket}
	path := filepath.Join(t.TempDir(), "snap")
	hdr := snapshotHeader{Version: snapshotVersion, Bucket: loc.bucket, NATS: redactURL(loc.url), WrittenAt: time.Now().Add(2 * time.Second).UnixMilli()}
	n, err := writeSnapshotFile(path, w.idx, hdr)
	if err != nil || n != 6 {
		t.Fatalf("write: %d records, %v; want 6 (the expired one left out)", n, err)
	}
	got, _, err := readSnapshotFile(path, loc, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range schemas.EntityTypes() {
		want := w.idx.counts[kindIndex(k)].Load()
		if k == schemas.EntityQuery {
			want = 0
		}
		if c := got.idx.counts[kindIndex(k)].Load(); c != want {
			t.Errorf("%s: %d after the round trip, want %d", k, c, want)
		}
	}
	if _, _, err := readSnapshotFile(path, location{url: loc.url, bucket: "other"}, 0); err == nil {
		t.Error("a snapshot of another bucket was loaded")
	}
	data, _ := os.ReadFile(path)
	for i, damaged := range [][]byte{data[:len(data)/2], append(append([]byte{}, data[:40]...), append([]byte{data[40] ^ 1}, data[41:]...)...), []byte("nonsense")} {
		p := filepath.Join(t.TempDir(), fmt.Sprint(i))
		if err := os.WriteFile(p, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readSnapshotFile(p, loc, 0); err == nil {
			t.Errorf("damaged snapshot %d was loaded", i)
		}
	}
}

// deadURL is a NATS URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "nats://" + addr
}

// The mirror reconnects by itself after the server restarts, resuming the watch after a
// short outage and starting it over (reconcile) after a long one.
func TestMirrorSurvivesServerRestart(t *testing.T) {
	for _, tt := range []struct {
		name    string
		rewatch time.Duration
	}{{"resume", time.Hour}, {"rewatch", 0}} {
		t.Run(tt.name, func(t *testing.T) {
			bk := newBucket(t)
			before := blk{kind: "ip", value: "203.0.113.7"}
			bk.put(t, before)
			m, _ := startMirror(t, bk.srv.URL(), "", func(c *mirrorConfig) { c.rewatchAfter = tt.rewatch })
			eventually(t, "synced", func() bool { return m.Status(time.Now()).Synced && blocks(m, before) })
			bk.srv.Restart(t)
			if !blocks(m, before) {
				t.Error("the block was dropped during the outage")
			}
			after := blk{kind: "ip", value: "203.0.113.8"}
			eventually(t, "a block written after the restart applies", func() bool {
				if _, err := bk.kv.Put(context.Background(), after.key(t), []byte(`{"kind":"ip"}`)); err != nil {
					return false // the test's own connection may still be reconnecting
				}
				return blocks(m, after)
			})
			eventually(t, "synced again", func() bool { return m.Status(time.Now()).Synced })
			resumed := m.Status(time.Now()).Resumes[resumeReconnect]
			if tt.rewatch > 0 && resumed == 0 {
				t.Error("the watch was not resumed after the short outage")
			}
			if tt.rewatch == 0 && resumed != 0 {
				t.Errorf("the watch was resumed %d times; want it started over after the long outage", resumed)
			}
		})
	}
}

// The first sync swaps in the bucket's index while a snapshot may be being written: the
// snapshot must not label the index loaded from the previous snapshot with the synced
// version, which would never be rewritten and bring a block the sync dropped back at the
// next start without NATS. snapshotRace runs the swap between writeSnapshot's two reads.
func TestSnapshotRacingTheFirstSync(t *testing.T) {
	keep, gone := blk{kind: "ip", value: "203.0.113.7"}, blk{kind: "consumer", value: "acme"}
	loaded, synced := newTestWriter(t, keep, gone).idx, newTestWriter(t, keep).idx
	loc := location{url: "nats://127.0.0.1:4222", bucket: DefaultBucket}
	path := filepath.Join(t.TempDir(), "snap")
	m := newMirror(mirrorConfig{loc: loc, snapshotPath: path, log: zerolog.New(zerolog.NewTestWriter(t))})
	m.cur.Store(loaded)
	m.snapshotRace = func() { // what watch does at the initial-values marker
		m.snapshotRace = nil
		m.cur.Store(synced)
		m.everSynced.Store(true)
		m.version.Add(1)
		m.synced.Store(true)
	}
	m.writeSnapshot(false)
	m.writeSnapshot(false) // a later period: writes whatever the first one did not
	got, _, err := readSnapshotFile(path, loc, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if got.idx.counts[kindIndex(schemas.EntityConsumer)].Load() != 0 || got.idx.counts[kindIndex(schemas.EntityIP)].Load() != 1 {
		t.Errorf("the snapshot holds the index loaded before the sync, as the synced version")
	}
}
