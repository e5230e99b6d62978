package consumer

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

// ActiveBlock is a block with its key, as listed by `blockwire blocks` and
// GET /v1/blocks.
type ActiveBlock struct {
	Key string `json:"key"`
	schemas.Block
}

// streamer is what listing needs of JetStream.
type streamer interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

var _ streamer = (jetstream.JetStream)(nil)

// Lister reads the active blocks straight from the bucket's stream: one
// ordered consumer over the last message of each key (filtered by kind),
// so listing never does a round trip per key and leaves nothing behind.
type Lister struct {
	js     streamer
	bucket string
	now    func() time.Time
}

// NewLister returns a Lister of the given bucket; now defaults to time.Now.
func NewLister(js streamer, bucket string, now func() time.Time) (*Lister, error) {
	if js == nil || bucket == "" {
		return nil, errors.New("configure block lister: JetStream and bucket are required")
	}
	if now == nil {
		now = time.Now
	}
	return &Lister{js: js, bucket: bucket, now: now}, nil
}

// List returns up to limit active blocks of the given kind ("" for all),
// skipping removed keys and blocks past their expiresAt; truncated reports
// that more exist.
func (l *Lister) List(ctx context.Context, kind schemas.EntityType, limit int) (blocks []ActiveBlock, truncated bool, err error) {
	filter := broker.KVPrefix(l.bucket) + ">"
	if kind != "" {
		if !kind.Valid() {
			return nil, false, fmt.Errorf("list blocks: unknown kind %q", kind)
		}
		filter = broker.KVPrefix(l.bucket) + string(kind) + ".>"
	}
	err = l.scan(ctx, filter, func(key string, b schemas.Block, _ uint64) error {
		if len(blocks) == limit {
			truncated = true
			return broker.ErrStopScan
		}
		blocks = append(blocks, ActiveBlock{Key: key, Block: b})
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list blocks: %w", err)
	}
	return blocks, truncated, nil
}

// scan calls fn with each active block whose subject matches filter, the latest value of each
// key, and the stream sequence it was stored at (the key's revision).
func (l *Lister) scan(ctx context.Context, filter string, fn func(key string, b schemas.Block, rev uint64) error) error {
	now := l.now()
	return broker.Scan(ctx, l.js, broker.KVStream(l.bucket), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	}, func(m jetstream.Msg, _, _ uint64) error {
		key, b, ok := l.decode(m)
		if !ok || !b.ExpiresAt.After(now) {
			return nil
		}
		var rev uint64
		if meta, err := m.Metadata(); err == nil {
			rev = meta.Sequence.Stream
		}
		return fn(key, b, rev)
	})
}

// decode reads a bucket message: false for removal and expiry markers and
// for values that are not blocks.
func (l *Lister) decode(m jetstream.Msg) (string, schemas.Block, bool) {
	var b schemas.Block
	if isMarker(m.Headers()) {
		return "", b, false
	}
	if json.Unmarshal(m.Data(), &b) != nil {
		return "", b, false
	}
	return m.Subject()[len(broker.KVPrefix(l.bucket)):], b, true
}
