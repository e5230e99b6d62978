package enforcer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// watchedBucket is what a mirror needs of the bucket it watches.
type watchedBucket interface {
	WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

var _ watchedBucket = jetstream.KeyValue(nil)

// A KV watch is an ordered push consumer that lives on one server of the cluster. When that
// server dies while the plugin's own server stays up, the plugin sees no disconnect: nats.go
// notices only after two missed idle heartbeats and then recreates the consumer, 11–16 s
// measured on a 3-node cluster (internal/cluster). lagCheck notices sooner. When no entry has
// arrived for a period, it asks the stream for its last sequence; if a later probe finds that
// sequence still not delivered, the watch is stalled and resumes after the last revision it
// applied. A live watch delivers in milliseconds, so a sequence a whole period old is missing.
type lagCheck struct {
	every time.Duration

	probe chan uint64 // the in-flight probe's answer (0: unknown); nil when none is in flight
	want  uint64      // the stream's last sequence at the previous probe, not delivered then; 0 none

	// After a stall resume, further resumes wait hold, doubled while they bring nothing, so a
	// stream whose last message can no longer be delivered is not re-watched in a loop.
	hold      time.Duration
	notBefore time.Time
	resumedAt uint64 // lastRev at the last stall resume
	stalledAt uint64 // the sequence the last stall resume waited for; 0 once settled
}

func newLagCheck(every time.Duration) *lagCheck { return &lagCheck{every: every, hold: every} }

// maybeProbe starts a probe when the watch has been idle for a period and none is in flight.
func (c *lagCheck) maybeProbe(ctx context.Context, b watchedBucket, now, lastEntry time.Time) {
	if c.probe != nil || now.Sub(lastEntry) < c.every || now.Before(c.notBefore) {
		return
	}
	ch := make(chan uint64, 1) // buffered: the probe never waits for the loop
	c.probe = ch
	go func() {
		pctx, cancel := context.WithTimeout(ctx, max(c.every, time.Second))
		defer cancel()
		ch <- streamLastSeq(pctx, b)
	}()
}

// answers is the in-flight probe's channel; nil (never ready) when none is in flight.
func (c *lagCheck) answers() <-chan uint64 { return c.probe }

// stalled takes a probe's answer and reports whether the watch must resume now.
func (c *lagCheck) stalled(seq, lastRev uint64, now time.Time) bool {
	c.probe = nil
	switch {
	case seq == 0 || seq <= lastRev: // unknown (the stream leader may be moving), or caught up
		c.want = 0
		return false
	case c.want == 0 || lastRev >= c.want: // behind, perhaps only in flight: look again
		c.want = seq
		return false
	}
	if lastRev > c.resumedAt {
		c.hold = c.every // the last resume brought entries: the next may follow soon
	} else {
		c.hold = min(2*c.hold, time.Minute)
	}
	c.stalledAt, c.resumedAt, c.want = c.want, lastRev, 0
	c.notBefore = now.Add(c.hold)
	return true
}

// settled is called at the initial-values marker of a resumed watch: every sequence the stall
// waited for was delivered or no longer exists, so lastRev may move past it. Without this, a
// last message removed by its TTL before delivery would look like a stall forever.
func (c *lagCheck) settled(lastRev uint64) uint64 {
	rev := max(lastRev, c.stalledAt)
	c.stalledAt = 0
	return rev
}

// streamLastSeq is the bucket stream's last sequence, 0 when it cannot be read.
func streamLastSeq(ctx context.Context, b watchedBucket) uint64 {
	st, err := b.Status(ctx)
	if err != nil {
		return 0
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return 0
	}
	return bs.StreamInfo().State.LastSeq
}
