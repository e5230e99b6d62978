package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// Dead-letter headers: why, and where the original lives in the stream.
const (
	HeaderDLQReason          = "Blockwire-Dlq-Reason"
	HeaderDLQDetail          = "Blockwire-Dlq-Detail"
	HeaderDLQOriginalSeq     = "Blockwire-Original-Seq"
	HeaderDLQOriginalSubject = "Blockwire-Original-Subject"
)

// Dead-letter reasons, the last token of blockwire.dlq.<reason>.
const (
	DLQInvalid       = "invalid"        // not an incident by the contract
	DLQMaxDeliveries = "max_deliveries" // failed on every delivery
)

// deadLetter copies a message to blockwire.dlq.<reason> with why and where
// it came from, and audits it. Both are deduplicated by the original
// sequence, so every replica may try and one copy lands.
func (c *Consumer) deadLetter(ctx context.Context, reason, detail string, seq uint64, subject string, h nats.Header, data []byte) error {
	m := nats.NewMsg(c.names.DLQSubject + "." + reason)
	m.Data = data
	for k, vs := range h {
		if k != jetstream.MsgIDHeader {
			m.Header[k] = vs
		}
	}
	if len(detail) > 1024 {
		detail = detail[:1024]
	}
	m.Header.Set(HeaderDLQReason, reason)
	m.Header.Set(HeaderDLQDetail, detail)
	m.Header.Set(HeaderDLQOriginalSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(HeaderDLQOriginalSubject, subject)
	if _, err := c.cfg.JS.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("dlq:%d", seq))); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	var audits pending
	if err := c.audit.publish(&audits, deadLetterMsgID(seq), schemas.AuditRecord{
		Action: schemas.ActionDeadLetter, EventSeq: seq, Detail: reason + ": " + detail,
	}); err != nil {
		return err
	}
	c.m.deadLetters.WithLabelValues(reason).Inc()
	c.log.Warn().Uint64("seq", seq).Str("reason", reason).Str("detail", detail).Msg("incident dead-lettered")
	return audits.wait(ctx)
}

// maxDeliveriesAdvisory is the part of JetStream's advisory we read.
type maxDeliveriesAdvisory struct {
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// watchMaxDeliveries dead-letters incidents JetStream gave up on: after
// MaxDeliver the message stays in the stream but is never delivered again.
func (c *Consumer) watchMaxDeliveries(ctx context.Context) error {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", c.names.IncidentStream, c.cfg.Durable)
	ch := make(chan *nats.Msg, 64)
	sub, err := c.cfg.Conn.ChanSubscribe(subject, ch)
	if err != nil {
		return fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case am := <-ch:
			var adv maxDeliveriesAdvisory
			if err := json.Unmarshal(am.Data, &adv); err != nil || adv.StreamSeq == 0 {
				c.log.Warn().Err(err).Msg("unreadable max-deliveries advisory")
				continue
			}
			raw, err := c.getIncident(ctx, adv.StreamSeq)
			if err != nil {
				c.log.Error().Err(err).Uint64("seq", adv.StreamSeq).Msg("read incident for dead letter")
				continue
			}
			detail := fmt.Sprintf("not applied after %d deliveries", adv.Deliveries)
			if err := c.deadLetter(ctx, DLQMaxDeliveries, detail, adv.StreamSeq, raw.Subject, raw.Header, raw.Data); err != nil {
				c.log.Error().Err(err).Uint64("seq", adv.StreamSeq).Msg("dead-letter incident")
			}
		}
	}
}

func (c *Consumer) getIncident(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	stream, err := c.cfg.JS.Stream(ctx, c.names.IncidentStream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", c.names.IncidentStream, err)
	}
	return stream.GetMsg(ctx, seq)
}
