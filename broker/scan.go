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

// orderedConsumers is what Scan needs of JetStream.
type orderedConsumers interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

var _ orderedConsumers = (jetstream.JetStream)(nil)

// Scan reads a stream in order with an ordered consumer — ephemeral, so it
// leaves nothing behind on the server — from where cfg says, up to the
// messages present when it started, calling fn for each with the number
// read so far and the total. Memory stays bounded whatever the stream holds.
func Scan(ctx context.Context, js orderedConsumers, stream string, cfg jetstream.OrderedConsumerConfig,
	fn func(m jetstream.Msg, done, total uint64) error) error {
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	total := info.NumPending
	var done uint64
	for done < total {
		batch, err := cons.Fetch(int(min(total-done, 500)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			done++
			if err := fn(m, done, total); err != nil {
				if errors.Is(err, ErrStopScan) {
					return nil
				}
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		if got == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			break // messages removed meanwhile (age limits, expiries): nothing more to read
		}
	}
	return nil
}
