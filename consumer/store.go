package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// blockStore is what the pipeline needs of the KV bucket.
type blockStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

var _ blockStore = (jetstream.KeyValue)(nil)

// publisher is what the pipeline needs of JetStream to publish.
type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

var _ publisher = (jetstream.JetStream)(nil)

// lastMsgReader reads the last message on a key's subject, markers included, which KV Get hides:
// the purge marker an unblock leaves says which incident unblocked.
type lastMsgReader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

var _ lastMsgReader = (jetstream.Stream)(nil)

// kvOperation is the header KV markers carry (nats.go's own constant is unexported).
const kvOperation = "KV-Operation"

// errConflict: someone else wrote the key between our read and our write.
var errConflict = errors.New("block changed concurrently")

// maxIncidentIDs bounds the incident ids remembered on one block, so a key
// hit by a flood of incidents keeps a bounded value; the audit trail has all.
const maxIncidentIDs = 100

// event is what one incident message asks of one block.
type event struct {
	seq       uint64 // stream sequence of the incident
	incident  *schemas.Incident
	source    schemas.Source
	at        time.Time // when the incident was stored: the block's createdAt
	expiresAt time.Time
}

// store applies block decisions to the bucket with optimistic concurrency,
// so any number of workers and processes may apply incidents at once.
type store struct {
	kv        blockStore
	pub       publisher
	last      lastMsgReader // nil: an unblock's marker is not consulted (rebuild writes no incidents)
	putPrefix string        // "$KV.<bucket>." — for the TTL-carrying update helper
	markerTTL time.Duration
	ceiling   *ceiling // nil for a store that only rewrites (rebuild)
	now       func() time.Time
	// opTimeout bounds each round trip, so a reply lost to a NATS restart
	// costs seconds, not the whole AckWait.
	opTimeout time.Duration
}

// outcome is what happened to one block.
type outcome struct {
	action schemas.Action
	detail string
}

// block creates the key or extends it to the later expiry. A redelivered
// event finds its own write and reports it again without writing twice.
func (s *store) block(ctx context.Context, t target, ev event) (outcome, error) {
	for range 16 {
		o, err := s.tryBlock(ctx, t, ev)
		if !errors.Is(err, errConflict) {
			return o, err
		}
	}
	return outcome{}, fmt.Errorf("apply block %s: %w after 16 attempts", t.key, errConflict)
}

func (s *store) tryBlock(ctx context.Context, t target, ev event) (outcome, error) {
	entry, err := s.get(ctx, t.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if by, err := s.unblockedAfter(ctx, t.key, ev.seq); err != nil || by != 0 {
			if err != nil {
				return outcome{}, err
			}
			return outcome{}, refuse(ReasonSuperseded, "%s was unblocked by a later incident (seq %d)", t.key, by)
		}
		return s.create(ctx, t, ev)
	case err != nil:
		return outcome{}, fmt.Errorf("read block %s: %w", t.key, err)
	}
	var cur schemas.Block
	if err := json.Unmarshal(entry.Value(), &cur); err != nil {
		// A value we cannot read cannot be enforced either: replace it.
		cur = schemas.Block{}
	}
	// Redelivery of an event already applied: report what it did, write nothing.
	if cur.CreatedSeq == ev.seq {
		return outcome{schemas.ActionBlocked, "until " + cur.ExpiresAt.Format(time.RFC3339)}, nil
	}
	if cur.UpdatedSeq == ev.seq {
		return outcome{schemas.ActionExtended, "until " + cur.ExpiresAt.Format(time.RFC3339)}, nil
	}
	next, changed := extend(cur, ev)
	if !changed {
		return outcome{schemas.ActionExtended, "unchanged: already blocked until " + cur.ExpiresAt.Format(time.RFC3339)}, nil
	}
	detail := "kept expiry " + cur.ExpiresAt.Format(time.RFC3339) // a later incident never shortens a block
	if next.ExpiresAt.After(cur.ExpiresAt) {
		detail = "from " + cur.ExpiresAt.Format(time.RFC3339) + " to " + next.ExpiresAt.Format(time.RFC3339)
	}
	if cur.Kind == "" { // unreadable value: rebuild it from this event
		next = newBlock(t, ev)
	}
	data, err := json.Marshal(next)
	if err != nil {
		return outcome{}, fmt.Errorf("encode block %s: %w", t.key, err)
	}
	if err := s.putWithTTL(ctx, t.key, data, next.ExpiresAt, entry.Revision()); err != nil {
		return outcome{}, err
	}
	return outcome{schemas.ActionExtended, detail}, nil
}

// extend is cur as ev leaves it: a later expiry (never an earlier one),
// the incident remembered (the last maxIncidentIDs kept), UpdatedSeq set;
// changed is false when ev brings nothing new. cur is not modified.
func extend(cur schemas.Block, ev event) (next schemas.Block, changed bool) {
	known := slices.Contains(cur.IncidentIDs, ev.incident.ID)
	later := ev.expiresAt.After(cur.ExpiresAt)
	if known && !later {
		return cur, false
	}
	next = cur
	next.UpdatedSeq = ev.seq
	if later {
		next.ExpiresAt = ev.expiresAt
	}
	if !known {
		next.IncidentIDs = append(slices.Clone(cur.IncidentIDs), ev.incident.ID)
		if len(next.IncidentIDs) > maxIncidentIDs {
			next.IncidentIDs = next.IncidentIDs[len(next.IncidentIDs)-maxIncidentIDs:]
		}
	}
	return next, true
}

// newBlock is the value of a block created by ev.
func newBlock(t target, ev event) schemas.Block {
	b := t.block
	b.CreatedAt = ev.at
	b.ExpiresAt = ev.expiresAt
	b.IncidentID = ev.incident.ID
	b.IncidentIDs = []string{ev.incident.ID}
	b.Title = ev.incident.Title
	b.Severity = ev.incident.Severity
	b.Source = ev.source
	b.CreatedSeq, b.UpdatedSeq = ev.seq, ev.seq
	return b
}

func (s *store) create(ctx context.Context, t target, ev event) (outcome, error) {
	ok, have, err := s.ceiling.reserve(ctx, 1)
	if err != nil {
		return outcome{}, err
	}
	if !ok {
		return outcome{}, refuse(ReasonCeiling, "the bucket holds %d blocks, the ceiling is %d", have, s.ceiling.max)
	}
	created := 0
	defer func() { s.ceiling.settle(1, created) }()
	b := newBlock(t, ev)
	data, err := json.Marshal(b)
	if err != nil {
		return outcome{}, fmt.Errorf("encode block %s: %w", t.key, err)
	}
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	_, err = s.kv.Create(octx, t.key, data, jetstream.KeyTTL(ttlUntil(b.ExpiresAt, s.now())))
	cancel()
	if errors.Is(err, jetstream.ErrKeyExists) {
		return outcome{}, errConflict
	}
	if err != nil {
		return outcome{}, fmt.Errorf("create block %s: %w", t.key, err)
	}
	created = 1
	return outcome{schemas.ActionBlocked, "until " + b.ExpiresAt.Format(time.RFC3339)}, nil
}

// createAll is the fast path for new blocks: every create of an incident is
// published at once (a create is a put that expects no previous message on
// the key), and the acks are awaited together, so an incident of a thousand
// entities costs about one round trip instead of a thousand. Keys that
// already exist (or are being removed) answer errConflict in their slot,
// for the caller to apply one by one.
func (s *store) createAll(ctx context.Context, ts []target, ev event) ([]outcome, []error) {
	outs := make([]outcome, len(ts))
	errs := make([]error, len(ts))
	ok, _, err := s.ceiling.reserve(ctx, len(ts))
	if err != nil || !ok {
		for i := range errs { // near the ceiling: one at a time, each checked
			errs[i] = errConflict
		}
		return outs, errs
	}
	created := 0
	defer func() { s.ceiling.settle(len(ts), created) }()
	futures := make([]jetstream.PubAckFuture, len(ts))
	for i, t := range ts {
		b := newBlock(t, ev)
		data, err := json.Marshal(b)
		if err != nil {
			errs[i] = fmt.Errorf("encode block %s: %w", t.key, err)
			continue
		}
		m := nats.NewMsg(s.putPrefix + t.key)
		m.Data = data
		futures[i], errs[i] = s.pub.PublishMsgAsync(m,
			jetstream.WithExpectLastSequencePerSubject(0),
			jetstream.WithMsgTTL(ttlUntil(b.ExpiresAt, s.now())))
		outs[i] = outcome{schemas.ActionBlocked, "until " + b.ExpiresAt.Format(time.RFC3339)}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			created++
		case err := <-f.Err():
			if broker.WrongLastSeq(err) {
				errs[i] = errConflict
			} else {
				errs[i] = fmt.Errorf("create block %s: %w", ts[i].key, err)
			}
		case <-ctx.Done():
			errs[i] = fmt.Errorf("create block %s: %w", ts[i].key, ctx.Err())
		}
	}
	return outs, errs
}

// putWithTTL is the one way to rewrite an existing block: KV Update would
// clear the key's server TTL, so it publishes to the key's subject with a
// Nats-TTL header, guarded by the revision it read.
func (s *store) putWithTTL(ctx context.Context, key string, value []byte, expiresAt time.Time, revision uint64) error {
	m := nats.NewMsg(s.putPrefix + key)
	m.Data = value
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	_, err := s.pub.PublishMsg(ctx, m,
		jetstream.WithMsgTTL(ttlUntil(expiresAt, s.now())),
		jetstream.WithExpectLastSequencePerSubject(revision))
	if broker.WrongLastSeq(err) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("update block %s: %w", key, err)
	}
	return nil
}

// get reads a key within one round trip's time.
func (s *store) get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	return s.kv.Get(ctx, key)
}

// ttlUntil is the server TTL for a block expiring at t: whole seconds (the
// server's resolution), rounded up so the server never forgets a block
// before its expiresAt, and at least one second.
func ttlUntil(t, now time.Time) time.Duration {
	d := t.Sub(now)
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}
