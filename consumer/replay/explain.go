package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// maxHistory bounds the records Explain keeps for one block (the newest).
const maxHistory = 10000

// Explanation is everything known about one block.
type Explanation struct {
	Key string `json:"key"`
	// Block is the current value in the bucket, nil when not blocked: no
	// value, or one whose expiry has passed (readers drop it then, even
	// before the bucket does).
	Block *schemas.Block `json:"block,omitempty"`
	// History is every audit record naming the key, oldest first.
	History []Event `json:"history"`
	// Truncated: the history held more records; the oldest were dropped.
	Truncated bool `json:"truncated,omitempty"`
}

// Explain reports whether key is blocked now, since and until when, on
// which incidents, and its whole history: blocked, extended, refused and
// why, expired, unblocked, applied in Kong.
func (r *Reader) Explain(ctx context.Context, key string) (*Explanation, error) {
	if _, err := schemas.ParseBlockKey(key); err != nil {
		return nil, err
	}
	ex := &Explanation{Key: key, History: []Event{}}
	bucket, err := r.js.KeyValue(ctx, r.names.BlocksBucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", r.names.BlocksBucket, err)
	}
	entry, err := bucket.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("read block %s: %w", key, err)
	default:
		var b schemas.Block
		if err := json.Unmarshal(entry.Value(), &b); err != nil {
			return nil, fmt.Errorf("decode block %s: %w", key, err)
		}
		if b.ExpiresAt.After(time.Now()) {
			ex.Block = &b
		}
	}
	err = broker.Scan(ctx, r.js, r.names.AuditStream, jetstream.OrderedConsumerConfig{},
		func(m jetstream.Msg, _, _ uint64) error {
			ev, err := decode(StreamAudit, m)
			if err != nil || ev.Audit.BlockKey != key {
				return err
			}
			if len(ex.History) == maxHistory {
				ex.History, ex.Truncated = ex.History[1:], true
			}
			ex.History = append(ex.History, *ev)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return ex, nil
}

// Audit emits the audit records stored after sequence afterSeq (or, when
// zero, since the time since), at most limit of them; it returns the
// sequence of the last one, the cursor for the next call.
func (r *Reader) Audit(ctx context.Context, since time.Time, afterSeq uint64, limit int, emit func(Event) error) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{}
	switch {
	case afterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, afterSeq+1
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	last, n := afterSeq, 0
	err := broker.Scan(ctx, r.js, r.names.AuditStream, cfg, func(m jetstream.Msg, _, _ uint64) error {
		if n == limit {
			return broker.ErrStopScan
		}
		ev, err := decode(StreamAudit, m)
		if err != nil {
			return err
		}
		if err := emit(*ev); err != nil {
			return err
		}
		last, n = ev.Seq, n+1
		return nil
	})
	return last, err
}
