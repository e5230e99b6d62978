package enforcer

import (
	"context"
	"errors"
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
//
// The same probe notices a stream that is no longer the one watched: created at another time
// (the bucket deleted and created again), ending before the revision applied (a store restored
// from an older backup), or gone on two probes in a row. A watch of it, resumed or not, would
// wait for sequences past the old ones and never deliver the new stream's first entries, so
// the mirror reloads the bucket instead.
type lagCheck struct {
	every time.Duration

	probe   chan streamState // the in-flight probe's answer; nil when none is in flight
	want    uint64           // the stream's last sequence at the previous probe, not delivered then; 0 none
	created time.Time        // the watched stream's creation time; zero until known
	missing int              // consecutive probes that found no stream

	// After a stall resume, further resumes wait hold, doubled while they bring nothing, so a
	// stream whose last message can no longer be delivered is not re-watched in a loop.
	hold      time.Duration
	notBefore time.Time
	resumedAt uint64 // lastRev at the last stall resume
	stalledAt uint64 // the sequence the last stall resume waited for; 0 once settled
}

// lagVerdict is what a probe's answer asks of the watch.
type lagVerdict int

const (
	lagFine     lagVerdict = iota
	lagStalled             // resume after the last applied revision
	lagReplaced            // the stream is not the one watched: reload the bucket
)

// missingProbes is how many probes in a row must find no stream before the bucket counts as
// deleted: one may catch a cluster mid-election.
const missingProbes = 2

// newLagCheck returns a check of the watch of the stream created at created (zero: unknown,
// learnt from the first answer).
func newLagCheck(every time.Duration, created time.Time) *lagCheck {
	return &lagCheck{every: every, hold: every, created: created}
}

// maybeProbe starts a probe when the watch has been idle for a period and none is in flight.
func (c *lagCheck) maybeProbe(ctx context.Context, b watchedBucket, now, lastEntry time.Time) {
	if c.probe != nil || now.Sub(lastEntry) < c.every || now.Before(c.notBefore) {
		return
	}
	ch := make(chan streamState, 1) // buffered: the probe never waits for the loop
	c.probe = ch
	go func() {
		pctx, cancel := context.WithTimeout(ctx, max(c.every, time.Second))
		defer cancel()
		ch <- readStream(pctx, b)
	}()
}

// answers is the in-flight probe's channel; nil (never ready) when none is in flight.
func (c *lagCheck) answers() <-chan streamState { return c.probe }

// judge takes a probe's answer and says what the watch must do now.
func (c *lagCheck) judge(s streamState, lastRev uint64, now time.Time) lagVerdict {
	c.probe = nil
	if s.missing {
		c.missing++
		c.want = 0
		if c.missing >= missingProbes {
			return lagReplaced
		}
		return lagFine
	}
	c.missing = 0
	seq := s.lastSeq
	switch {
	case !s.answered: // unknown (the stream leader may be moving)
		c.want = 0
		return lagFine
	case c.replaced(s, lastRev):
		return lagReplaced
	case seq == lastRev: // caught up
		c.want = 0
		return lagFine
	case c.want == 0 || lastRev >= c.want: // behind, perhaps only in flight: look again
		c.want = seq
		return lagFine
	}
	if lastRev > c.resumedAt {
		c.hold = c.every // the last resume brought entries: the next may follow soon
	} else {
		c.hold = min(2*c.hold, time.Minute)
	}
	c.stalledAt, c.resumedAt, c.want = c.want, lastRev, 0
	c.notBefore = now.Add(c.hold)
	return lagStalled
}

// replaced reports whether an answered s shows another stream than the one watched, which
// has applied revisions up to lastRev: created at another time, or ending before lastRev (a
// stream's last sequence never goes back, even when it is purged). An unknown creation time
// is learnt from s.
func (c *lagCheck) replaced(s streamState, lastRev uint64) bool {
	if c.created.IsZero() {
		c.created = s.created
	}
	return !s.created.Equal(c.created) || s.lastSeq < lastRev
}

// settled is called at the initial-values marker of a resumed watch: every sequence the stall
// waited for was delivered or no longer exists, so lastRev may move past it. Without this, a
// last message removed by its TTL before delivery would look like a stall forever.
func (c *lagCheck) settled(lastRev uint64) uint64 {
	rev := max(lastRev, c.stalledAt)
	c.stalledAt = 0
	return rev
}

// streamState is what one look at the bucket's stream found.
type streamState struct {
	answered bool // the stream answered: lastSeq and created are set
	missing  bool // the server says there is no such stream
	lastSeq  uint64
	created  time.Time
}

// readStream asks the server about the bucket's stream.
func readStream(ctx context.Context, b watchedBucket) streamState {
	st, err := b.Status(ctx)
	if err != nil {
		return streamState{missing: errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)}
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return streamState{}
	}
	si := bs.StreamInfo()
	return streamState{answered: true, lastSeq: si.State.LastSeq, created: si.Created}
}
