package consumer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/wait"
	"github.com/blockwire/blockwire/schemas"
)

// expiryDurable is the consumer, shared by every replica, that reads the
// bucket's expiry markers. Being durable, it also catches markers placed
// while blockwire was down, for as long as the markers live.
const expiryDurable = "blockwire-expiry"

// watchExpiries writes one `expired` audit record for each block the server
// forgot because its TTL passed (a marker with Nats-Marker-Reason: MaxAge).
func (c *Consumer) watchExpiries(ctx context.Context) error {
	stream := broker.KVStream(c.names.BlocksBucket)
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = c.cfg.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable:       expiryDurable,
			Description:   "blockwire: audit block expiries",
			AckPolicy:     jetstream.AckNonePolicy, // markers are deduplicated by id; a lost one costs a record, not a block
			DeliverPolicy: jetstream.DeliverNewPolicy,
			HeadersOnly:   true, // values are not needed, only the marker header
		})
		if err == nil {
			break
		}
		// Expiry records are a side duty: retry rather than stop the pipeline.
		c.log.Warn().Err(err).Str("stream", stream).Msg("create expiry consumer, retrying")
		if wait.Sleep(ctx, 5*time.Second) != nil {
			return nil
		}
	}
	prefix := broker.KVPrefix(c.names.BlocksBucket)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if m.Headers().Get(jetstream.MarkerReasonHeader) != "MaxAge" {
			return
		}
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		key := strings.TrimPrefix(m.Subject(), prefix)
		rec := schemas.AuditRecord{Action: schemas.ActionExpired, BlockKey: key, Detail: "the block's time passed"}
		if parts, err := schemas.ParseBlockKey(key); err == nil {
			rec.Kind = parts.Kind
		}
		var audits pending
		err = c.audit.publish(&audits, expiredMsgID(key, meta.Sequence.Stream), rec)
		if err == nil {
			err = audits.wait(ctx)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Str("key", key).Msg("audit expiry")
			return
		}
		c.m.blocks.WithLabelValues(string(schemas.ActionExpired), string(rec.Kind)).Inc()
	}, jetstream.PullExpiry(5*time.Second), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		c.log.Warn().Err(err).Msg("consume bucket changes")
	}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}
