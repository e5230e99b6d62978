package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/blockwire/blockwire/schemas"
)

// process applies one incident message, stored at seq at time at. It is
// idempotent: a redelivery finds its own writes (the block remembers the
// event sequence that made it) and its audit records deduplicated, so
// effects happen once.
func (c *Consumer) process(ctx context.Context, h nats.Header, data []byte, seq uint64, at time.Time) error {
	inc, err := schemas.ParseIncident(data)
	if err != nil {
		return &poisonError{reason: DLQInvalid, detail: err.Error()}
	}
	p := makePlan(&c.cfg.Guardrails, inc, h, at, c.cfg.Now())
	var audits pending
	if err := c.audit.publish(&audits, acceptedMsgID(seq), schemas.AuditRecord{
		Action: schemas.ActionAccepted, IncidentID: inc.ID, EventSeq: seq, Actor: p.actor,
		Detail: fmt.Sprintf("%s from %s with %d entities", inc.EffectiveType(), p.source, len(inc.Entities)),
	}); err != nil {
		return err
	}
	unblock := p.unblock
	ev := p.event(seq)

	var (
		mu      sync.Mutex
		targets []target
		recs    []schemas.AuditRecord
		idx     []int
	)
	for _, s := range p.steps {
		rec := schemas.AuditRecord{IncidentID: inc.ID, EventSeq: seq, Kind: s.kind, BlockKey: s.t.key, Actor: p.actor}
		if s.err != nil {
			if err := c.recordRefusal(&mu, &audits, seq, s.entity, rec, s.err); err != nil {
				return err
			}
			continue
		}
		if !s.dup {
			targets, recs, idx = append(targets, s.t), append(recs, rec), append(idx, s.entity)
		}
	}

	record := func(j int, o outcome, err error) error {
		if err != nil {
			return c.recordRefusal(&mu, &audits, seq, idx[j], recs[j], err)
		}
		rec := recs[j]
		rec.Action, rec.Detail = o.action, o.detail
		c.m.blocks.WithLabelValues(string(o.action), string(targets[j].parts.Kind)).Inc()
		mu.Lock()
		defer mu.Unlock()
		return c.audit.publish(&audits, entityMsgID(seq, idx[j]), rec)
	}
	// New blocks go in one batch; what exists already (or is at the ceiling)
	// takes the careful path, one key at a time, a few in parallel.
	var slow []int
	if unblock {
		slow = make([]int, len(targets))
		for j := range targets {
			slow[j] = j
		}
	} else {
		outs, errs := c.store.createAll(ctx, targets, ev)
		for j := range targets {
			if errors.Is(errs[j], errConflict) {
				slow = append(slow, j)
				continue
			}
			if err := record(j, outs[j], errs[j]); err != nil {
				return err
			}
		}
	}
	var g errgroup.Group
	g.SetLimit(c.cfg.Parallel)
	for _, j := range slow {
		g.Go(func() error {
			var o outcome
			var err error
			if unblock {
				o, err = c.store.unblock(ctx, targets[j], seq)
			} else {
				o, err = c.store.block(ctx, targets[j], ev)
			}
			return record(j, o, err)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return audits.wait(ctx)
}

// recordRefusal audits a refused entity; any other error is returned so
// the incident is retried.
func (c *Consumer) recordRefusal(mu *sync.Mutex, audits *pending, seq uint64, i int, rec schemas.AuditRecord, err error) error {
	var r *refusal
	if !errors.As(err, &r) {
		return err
	}
	rec.Action, rec.Detail = schemas.ActionRefused, r.Error()
	c.m.blocks.WithLabelValues(string(schemas.ActionRefused), string(rec.Kind)).Inc()
	c.m.refused.WithLabelValues(r.reason).Inc()
	mu.Lock()
	defer mu.Unlock()
	return c.audit.publish(audits, entityMsgID(seq, i), rec)
}
