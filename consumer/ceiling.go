package consumer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
)

// bucketStatus is what the ceiling needs of the bucket: its message count.
type bucketStatus interface {
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

// ceiling enforces Guardrails.MaxActiveBlocks. Creates reserve their slots before they are
// published, so workers applying incidents at once cannot together pass the ceiling; the count
// is the server's, refreshed at most every `every`, and kept current locally in between. The
// server's count (the bucket's messages) also holds unblock and expiry markers, kept for the
// marker TTL, so near the ceiling it counts the live keys themselves (at most every liveEvery)
// before it refuses. Replicas each hold their own count: across replicas the ceiling is
// approximate by what they create within one refresh.
type ceiling struct {
	max       int
	status    bucketStatus
	live      func(ctx context.Context) (int, error) // nil: no exact count
	now       func() time.Time
	every     time.Duration // default 1s
	liveEvery time.Duration // default 10s
	opTimeout time.Duration

	mu         sync.Mutex
	count      int       // blocks in the bucket, as last counted plus local changes
	pending    int       // slots reserved by creates in flight
	until      time.Time // when count is next refreshed from the server
	liveAt     time.Time // when live keys were last counted
	refreshing bool      // a round trip is in flight; the others use count meanwhile
	// drift is what this process created while the round trip was in flight: the server may
	// have answered before those creates, so they are added to its answer (counting some twice
	// errs toward refusing, and the next refresh corrects it).
	drift int
}

// reserve claims n slots for creates about to be published. When they do not fit it returns
// false and the count that refused them. The caller settles every reservation it got.
func (c *ceiling) reserve(ctx context.Context, n int) (bool, int, error) {
	if err := c.refresh(ctx, false); err != nil {
		return false, 0, err
	}
	if ok, have := c.take(n); ok || c.live == nil {
		return ok, have, nil
	}
	if err := c.refresh(ctx, true); err != nil {
		return false, 0, err
	}
	ok, have := c.take(n)
	return ok, have, nil
}

func (c *ceiling) take(n int) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count+c.pending+n > c.max {
		return false, c.count + c.pending
	}
	c.pending += n
	return true, 0
}

// settle ends a reservation of reserved slots, of which created became blocks.
func (c *ceiling) settle(reserved, created int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending -= reserved
	c.count += created
	c.drift += created
}

// removed counts a block unblocked.
func (c *ceiling) removed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count-- // not drift: a removal the server's answer missed is corrected by the next refresh
}

// refresh counts again when the count is due (or, with exact, when the live keys were not
// counted for liveEvery). The lock is never held across the round trip: a reply lost to a NATS
// restart must not stall every worker behind it.
func (c *ceiling) refresh(ctx context.Context, exact bool) error {
	c.mu.Lock()
	now := c.now()
	due := now.After(c.until)
	if exact {
		due = now.Sub(c.liveAt) >= c.liveEvery
	}
	if c.refreshing || !due {
		c.mu.Unlock()
		return nil
	}
	c.refreshing, c.drift = true, 0
	c.mu.Unlock()

	n, err := c.countNow(ctx, exact)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing = false
	if err != nil {
		return fmt.Errorf("count blocks: %w", err)
	}
	c.count, c.until = n+c.drift, now.Add(c.every)
	if exact { // the server's count would bring the markers back: keep this one longer
		c.liveAt, c.until = now, now.Add(c.liveEvery)
	}
	return nil
}

func (c *ceiling) countNow(ctx context.Context, exact bool) (int, error) {
	if exact {
		return c.live(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout)
	defer cancel()
	st, err := c.status.Status(ctx)
	if err != nil {
		return 0, err
	}
	return int(st.Values()), nil
}

// countLive counts the keys of bucket that hold a block: the last message of each subject,
// headers only, markers left out.
func countLive(ctx context.Context, js streamer, bucket string) (int, error) {
	n := 0
	err := broker.Scan(ctx, js, broker.KVStream(bucket), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		HeadersOnly:   true,
	}, func(m jetstream.Msg, _, _ uint64) error {
		if !isMarker(m.Headers()) {
			n++
		}
		return nil
	})
	return n, err
}
