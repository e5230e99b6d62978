package kongsync_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

// gatedRenewals is JetStream with the lease renewals (publishes to one subject) held at a gate
// the test opens and closes.
type gatedRenewals struct {
	jetstream.JetStream
	subject string

	mu       sync.Mutex
	gate     chan struct{} // nil while open
	waiting  chan struct{} // closed when a renewal waits at the closed gate
	failures int
}

func (g *gatedRenewals) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if msg.Subject != g.subject {
		return g.JetStream.PublishMsg(ctx, msg, opts...)
	}
	g.mu.Lock()
	gate, waiting := g.gate, g.waiting
	g.mu.Unlock()
	if gate != nil {
		close(waiting)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ack, err := g.JetStream.PublishMsg(ctx, msg, opts...)
	if err != nil {
		g.mu.Lock()
		g.failures++
		g.mu.Unlock()
	}
	return ack, err
}

// close holds the next renewals; the channel closes once one waits.
func (g *gatedRenewals) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.waiting = make(chan struct{}), make(chan struct{})
	return g.waiting
}

func (g *gatedRenewals) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
	g.gate = nil
}

// A renewal that is merely late makes the holder stop writing (its last renewal is older than
// four fifths of the TTL), yet the lease is still its own once the renewal lands: the reconcile
// that found the lease not valid must be tried again, not dropped until the next change or period.
func TestLateRenewalRetriesTheReconcile(t *testing.T) {
	r := newRig(t, kongfake.Options{})
	var offset atomic.Int64 // the syncer's clock runs ahead of the real one by this much
	var js *gatedRenewals
	s := r.syncer(kongsync.KongConfig{}, func(c *kongsync.Config) {
		c.LeaseTTL = 12 * time.Second // long enough that a slow machine never lets it lapse for real
		c.Period = time.Hour          // only the fix may bring the block to Kong
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		js = &gatedRenewals{JetStream: c.JS, subject: "$KV." + kongsync.DefaultLeaseBucket + ".kongsync"}
		c.JS = js
	})
	r.block(schemas.EntityIP, "203.0.113.1", nil, time.Hour)
	r.run(s)
	deny := func(want ...string) func() (bool, string) {
		return func() (bool, string) {
			got, _ := r.denyAt(kongsync.Scope{})
			return slices.Equal(sorted(got), want), fmt.Sprint("global deny ", got)
		}
	}
	eventually(t, "the first reconcile", deny("203.0.113.1"))

	// A renewal is due and held back; the one before it is done. The clock jumps 10s: the last
	// renewal is now older than 4/5 of the TTL, and the holder must not write.
	select {
	case <-js.close():
	case <-time.After(waitFor):
		t.Fatal("no lease renewal")
	}
	offset.Store(int64(10 * time.Second))
	r.block(schemas.EntityIP, "203.0.113.2", nil, time.Hour)
	eventually(t, "a reconcile that found the lease not valid", func() (bool, string) {
		n := metric(t, s.reg, "blockwire_kongsync_reconciles_total", map[string]string{"result": "lease_lost"})
		return n >= 1, fmt.Sprint(n)
	})
	js.open() // the renewal lands: the lease is valid again, and still this replica's
	eventually(t, "the block in Kong", deny("203.0.113.1", "203.0.113.2"))

	js.mu.Lock()
	failures := js.failures
	js.mu.Unlock()
	if n := s.logs.count("kong sync lease acquired"); n != 1 || failures != 0 || r.leaseHolder() != s.Holder() {
		t.Fatalf("the lease changed hands: acquired %d times, %d renewals failed, holder %q", n, failures, r.leaseHolder())
	}
}
