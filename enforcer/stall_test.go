package enforcer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/schemas"
)

func TestLagCheckVerdicts(t *testing.T) {
	created := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	at := func(seq uint64) streamState { return streamState{answered: true, lastSeq: seq, created: created} }
	unknown, missing := streamState{}, streamState{missing: true}
	recreated := streamState{answered: true, lastSeq: 30, created: created.Add(time.Minute)}
	type probe struct {
		s       streamState
		lastRev uint64
		want    lagVerdict
	}
	for _, tt := range []struct {
		name    string
		created time.Time // of the watched stream, zero: unknown
		probes  []probe
	}{
		{"caught up", created, []probe{{at(10), 10, lagFine}, {at(10), 10, lagFine}}},
		{"unknown answers never stall", created, []probe{{unknown, 5, lagFine}, {unknown, 5, lagFine}}},
		{"in flight once, then delivered", created, []probe{{at(12), 10, lagFine}, {at(12), 12, lagFine}}},
		{"behind twice with progress", created, []probe{{at(12), 10, lagFine}, {at(15), 12, lagFine}, {at(15), 15, lagFine}}},
		{"the sequence seen a period ago never came", created, []probe{{at(12), 10, lagFine}, {at(12), 10, lagStalled}}},
		{"a newer sequence does not hide the stall", created, []probe{{at(12), 10, lagFine}, {at(20), 11, lagStalled}}},
		{"the stream ends before the applied revision", created, []probe{{at(1), 51, lagReplaced}}},
		{"an empty stream after entries were applied", created, []probe{{at(0), 3, lagReplaced}}},
		{"created at another time", created, []probe{{recreated, 10, lagReplaced}}},
		{"creation time learnt from the first answer", time.Time{}, []probe{{at(10), 10, lagFine}, {recreated, 10, lagReplaced}}},
		{"missing once is not enough", created, []probe{{missing, 10, lagFine}, {at(10), 10, lagFine}, {missing, 10, lagFine}}},
		{"missing twice in a row", created, []probe{{missing, 10, lagFine}, {missing, 10, lagReplaced}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newLagCheck(time.Second, tt.created)
			now := time.Now()
			for i, p := range tt.probes {
				if got := c.judge(p.s, p.lastRev, now); got != p.want {
					t.Fatalf("probe %d (%+v, applied %d): verdict %d, want %d", i, p.s, p.lastRev, got, p.want)
				}
			}
		})
	}
}

// Resumes that bring nothing back off; one that brought entries resets the wait.
func TestLagCheckHoldsOffFruitlessResumes(t *testing.T) {
	c := newLagCheck(time.Second, time.Time{})
	now := time.Now()
	stall := func(seq, rev uint64) time.Duration {
		t.Helper()
		s := streamState{answered: true, lastSeq: seq}
		c.judge(s, rev, now)
		if c.judge(s, rev, now) != lagStalled {
			t.Fatalf("no stall at stream %d, applied %d", seq, rev)
		}
		return c.notBefore.Sub(now)
	}
	first, second := stall(9, 5), stall(9, 5)
	if second <= first {
		t.Errorf("a fruitless resume did not back off: %v then %v", first, second)
	}
	if got := stall(20, 12); got != time.Second {
		t.Errorf("after a resume that brought entries the hold is %v, want 1s", got)
	}
	if got := c.settled(12); got != 20 {
		t.Errorf("settled moved the applied revision to %d, want 20 (the sequence the stall waited for)", got)
	}
	if got := c.settled(12); got != 12 {
		t.Errorf("a second settle moved the applied revision to %d, want 12", got)
	}
}

// The server holding the watch's consumer can die while the plugin's own server lives on: no
// disconnect is seen. Deleting the consumer on the server reproduces that with one server;
// the lag check resumes the watch, without waiting for nats.go's missed heartbeats.
func TestMirrorResumesAStalledWatch(t *testing.T) {
	bk := newBucket(t)
	before := blk{kind: "ip", value: "203.0.113.7"}
	bk.put(t, before)
	m, _ := startMirror(t, bk.srv.URL(), "", func(c *mirrorConfig) { c.lagCheckEvery = 50 * time.Millisecond })
	eventually(t, "synced", func() bool { return m.Status(time.Now()).Synced && blocks(m, before) })

	nc, err := nats.Connect(bk.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stream, err := js.Stream(ctx, "KV_"+DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	deleted := 0
	for name := range names.Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		deleted++
	}
	if deleted == 0 {
		t.Fatal("the mirror's watch has no consumer on the server")
	}

	after := blk{kind: "ip", value: "203.0.113.8"}
	bk.put(t, after)
	eventually(t, "the block written after the consumer vanished applies", func() bool { return blocks(m, after) })
	if st := m.Status(time.Now()); st.Resumes[resumeStall] == 0 {
		t.Errorf("the block applied without a stall resume (resumes %v): nats.go's own recovery, not the lag check", st.Resumes)
	}
	if !blocks(m, before) {
		t.Error("the earlier block was dropped by the resume")
	}
	eventually(t, "synced again", func() bool { return m.Status(time.Now()).Synced })
}

// A bucket deleted and created again is a new stream, whose sequences start over below the
// revision the watch applied: a resumed or recreated consumer would wait past them forever,
// so the blocks of the deleted bucket would stay enforced, a new one never, and the mirror
// would call itself synced. The lag check notices: the mirror is not synced while the bucket
// is gone, keeps enforcing the last known blocks, and reloads the bucket once it is back.
func TestMirrorReloadsARecreatedBucket(t *testing.T) {
	bk := newBucket(t)
	old := make([]blk, 51)
	for i := range old {
		old[i] = blk{kind: "ip", value: fmt.Sprintf("203.0.113.%d", i+1)}
		bk.put(t, old[i])
	}
	m, _ := startMirror(t, bk.srv.URL(), "", func(c *mirrorConfig) { c.lagCheckEvery = 50 * time.Millisecond })
	eventually(t, "synced", func() bool { return m.Status(time.Now()).Synced && blocks(m, old[50]) })

	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t, bk.srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, DefaultBucket); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not synced while the bucket is gone", func() bool { return !m.Status(time.Now()).Synced })
	if !blocks(m, old[0]) {
		t.Error("the last known blocks were dropped with the bucket")
	}
	if bk.kv, err = natstest.Provisioned(t, bk.srv.URL()).Blocks(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := blk{kind: "ip", value: "203.0.113.99"}
	bk.put(t, fresh)
	eventually(t, "the new bucket's block applies", func() bool { return blocks(m, fresh) })
	eventually(t, "synced with the new bucket", func() bool { return m.Status(time.Now()).Synced })
	for _, b := range old {
		if blocks(m, b) {
			t.Fatalf("%s, a block of the deleted bucket, is still enforced", b.value)
		}
	}
}

// A server whose store is restored from an older backup comes back with a stream that ends
// before the revision the watch applied (same stream, same creation time). The watch must
// not resume after that revision: it reloads the bucket. The lag check is off, so only the
// reconnect's own check can notice.
func TestMirrorReloadsARestoredStream(t *testing.T) {
	bk := newBucket(t)
	kept := blk{kind: "ip", value: "203.0.113.1"}
	bk.put(t, kept)
	backup := filepath.Join(t.TempDir(), "backup")
	stopServer(t, bk.srv)
	if err := os.CopyFS(backup, os.DirFS(bk.srv.StoreDir())); err != nil {
		t.Fatal(err)
	}
	bk.srv.Restart(t)

	m, _ := startMirror(t, bk.srv.URL(), "", func(c *mirrorConfig) { c.lagCheckEvery = time.Hour })
	lost := make([]blk, 5)
	for i := range lost {
		lost[i] = blk{kind: "ip", value: fmt.Sprintf("198.51.100.%d", i+1)}
		putEventually(t, bk, lost[i])
	}
	eventually(t, "synced", func() bool { return m.Status(time.Now()).Synced && blocks(m, kept) && blocks(m, lost[4]) })

	stopServer(t, bk.srv)
	if err := os.RemoveAll(bk.srv.StoreDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(bk.srv.StoreDir(), os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	bk.srv.Restart(t)
	fresh := blk{kind: "ip", value: "203.0.113.99"}
	putEventually(t, bk, fresh)
	eventually(t, "a block written after the restore applies", func() bool { return blocks(m, fresh) })
	eventually(t, "synced with the restored stream", func() bool { return m.Status(time.Now()).Synced })
	if !blocks(m, kept) {
		t.Error("the block the backup holds was dropped")
	}
	for _, b := range lost {
		if blocks(m, b) {
			t.Fatalf("%s, a block the restored stream does not hold, is still enforced", b.value)
		}
	}
}

// stopServer shuts the server down, for its store to be changed before srv.Restart.
func stopServer(t *testing.T, srv *natstest.Server) {
	t.Helper()
	srv.Server().Shutdown()
	srv.Server().WaitForShutdown()
}

// putEventually writes b, retrying while the test's own connection reconnects.
func putEventually(t *testing.T, bk *bucket, b blk) {
	t.Helper()
	data, err := json.Marshal(schemas.Block{Kind: b.kind, CreatedAt: time.Now().UTC(), ExpiresAt: time.UnixMilli(b.op().exp).UTC(), Source: schemas.SourceManual})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the put of "+b.value, func() bool {
		_, err := bk.kv.Put(context.Background(), b.key(t), data)
		return err == nil
	})
}
