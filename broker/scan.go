package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStopScan, returned by a Scan callback, ends the scan without error.
var ErrStopScan = errors.New("stop scan")

// orderedConsumers is what reading a stream needs of JetStream.
type orderedConsumers interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

var _ orderedConsumers = (jetstream.JetStream)(nil)

// Cursor reads a stream in order with an ordered consumer — ephemeral, so
// it leaves nothing behind on the server — from where its configuration
// says, up to the messages present when it was opened. Memory stays
// bounded whatever the stream holds.
type Cursor struct {
	stream string
	cons   jetstream.Consumer
	total  uint64
	done   uint64
	batch  []jetstream.Msg
}

// OpenCursor positions a cursor on stream.
func OpenCursor(ctx context.Context, js orderedConsumers, stream string, cfg jetstream.OrderedConsumerConfig) (*Cursor, error) {
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	var info *jetstream.ConsumerInfo
	err = Retry(ctx, 5, 5*time.Second, func(ctx context.Context) error {
		info, err = cons.Info(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return &Cursor{stream: stream, cons: cons, total: info.NumPending}, nil
}

// Total is the number of messages the cursor will read; Done how many it has.
func (c *Cursor) Total() uint64 { return c.total }

// Done is the number of messages read so far.
func (c *Cursor) Done() uint64 { return c.done }

// Next returns the next message, or nil at the end.
func (c *Cursor) Next(ctx context.Context) (jetstream.Msg, error) {
	if len(c.batch) == 0 {
		if c.done >= c.total {
			return nil, nil
		}
		if err := c.fetch(ctx); err != nil {
			return nil, err
		}
		if len(c.batch) == 0 {
			c.total = c.done // messages removed meanwhile (age limits, expiries)
			return nil, nil
		}
	}
	m := c.batch[0]
	c.batch = c.batch[1:]
	c.done++
	return m, nil
}

func (c *Cursor) fetch(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// On a cluster the first pull of a fresh ordered consumer may find no
	// responder yet. Fetch itself does not fail then: the batch ends with
	// the error, so the batch is read inside the retry. Only a pull that
	// delivered nothing is retried; one that delivered some keeps them, and
	// the next fetch resumes after the last (an ordered consumer restarts
	// where it stopped).
	err := Retry(ctx, 5, 15*time.Second, func(context.Context) error {
		batch, err := c.cons.Fetch(int(min(c.total-c.done, 500)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return err
		}
		n := len(c.batch)
		for m := range batch.Messages() {
			c.batch = append(c.batch, m)
		}
		err = batch.Error()
		if err == nil || errors.Is(err, jetstream.ErrNoMessages) || (len(c.batch) > n && Transient(err)) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read stream %s: %w", c.stream, err)
	}
	return nil
}

// Scan reads a stream with a Cursor, calling fn for each message with the
// number read so far and the total; fn returning ErrStopScan ends it.
func Scan(ctx context.Context, js orderedConsumers, stream string, cfg jetstream.OrderedConsumerConfig,
	fn func(m jetstream.Msg, done, total uint64) error) error {
	c, err := OpenCursor(ctx, js, stream, cfg)
	if err != nil {
		return err
	}
	for {
		m, err := c.Next(ctx)
		if err != nil || m == nil {
			return err
		}
		if err := fn(m, c.done, c.total); err != nil {
			if errors.Is(err, ErrStopScan) {
				return nil
			}
			return err
		}
	}
}
