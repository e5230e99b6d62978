package enforcer

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestLagCheckVerdicts(t *testing.T) {
	type probe struct {
		seq, lastRev uint64
		want         bool
	}
	for _, tt := range []struct {
		name   string
		probes []probe
	}{
		{"caught up", []probe{{10, 10, false}, {10, 10, false}}},
		{"unknown answers never stall", []probe{{0, 5, false}, {0, 5, false}}},
		{"in flight once, then delivered", []probe{{12, 10, false}, {12, 12, false}}},
		{"behind twice with progress", []probe{{12, 10, false}, {15, 12, false}, {15, 15, false}}},
		{"the sequence seen a period ago never came", []probe{{12, 10, false}, {12, 10, true}}},
		{"a newer sequence does not hide the stall", []probe{{12, 10, false}, {20, 11, true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newLagCheck(time.Second)
			now := time.Now()
			for i, p := range tt.probes {
				if got := c.stalled(p.seq, p.lastRev, now); got != p.want {
					t.Fatalf("probe %d (stream %d, applied %d): stalled=%v, want %v", i, p.seq, p.lastRev, got, p.want)
				}
			}
		})
	}
}

// Resumes that bring nothing back off; one that brought entries resets the wait.
func TestLagCheckHoldsOffFruitlessResumes(t *testing.T) {
	c := newLagCheck(time.Second)
	now := time.Now()
	stall := func(seq, rev uint64) time.Duration {
		t.Helper()
		c.stalled(seq, rev, now)
		if !c.stalled(seq, rev, now) {
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
