package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// auditor writes audit records. Each carries a Nats-Msg-Id derived from
// the event and the entity, so a redelivered incident cannot write its
// actions twice: the stream's duplicate window drops the second copy.
type auditor struct {
	pub     publisher
	subject string // "blockwire.audit"
	actor   string
	now     func() time.Time
}

// pending collects the acknowledgements of a batch of audit records.
type pending []jetstream.PubAckFuture

func (a *auditor) publish(p *pending, msgID string, rec schemas.AuditRecord) error {
	rec.Time = a.now().UTC()
	if rec.Actor == "" {
		rec.Actor = a.actor
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	m := nats.NewMsg(a.subject + "." + string(rec.Action))
	m.Data = data
	f, err := a.pub.PublishMsgAsync(m, jetstream.WithMsgID(msgID))
	if err != nil {
		return fmt.Errorf("publish audit record: %w", err)
	}
	*p = append(*p, f)
	return nil
}

// wait returns once JetStream acknowledged every record, or the first error.
func (p pending) wait(ctx context.Context) error {
	for _, f := range p {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("store audit record: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("store audit record: %w", ctx.Err())
		}
	}
	return nil
}

// Audit message ids: one per (event, entity), one for the incident itself.
func entityMsgID(seq uint64, i int) string       { return fmt.Sprintf("incident:%d:%d", seq, i) }
func acceptedMsgID(seq uint64) string            { return fmt.Sprintf("incident:%d:accepted", seq) }
func deadLetterMsgID(seq uint64) string          { return fmt.Sprintf("incident:%d:dead_letter", seq) }
func expiredMsgID(key string, rev uint64) string { return fmt.Sprintf("expired:%s:%d", key, rev) }
