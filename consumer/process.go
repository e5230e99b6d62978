package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/blockwire/blockwire/schemas"
)

// process applies one incident message. It is idempotent: a redelivery
// finds its own writes (the block remembers the event sequence that made
// it) and its audit records deduplicated, so effects happen once.
func (c *Consumer) process(ctx context.Context, subject string, h nats.Header, data []byte, seq uint64) error {
	inc, err := schemas.ParseIncident(data)
	if err != nil {
		return &poisonError{reason: "invalid", detail: err.Error()}
	}
	src := sourceOf(h)
	actor := "" // the auditor's default: this process
	if a := h.Get(schemas.HeaderActor); src == schemas.SourceManual && a != "" {
		actor = "manual:" + a // the operator the manual API named
	}
	var audits pending
	if err := c.audit.publish(&audits, acceptedMsgID(seq), schemas.AuditRecord{
		Action: schemas.ActionAccepted, IncidentID: inc.ID, EventSeq: seq, Actor: actor,
		Detail: fmt.Sprintf("%s from %s with %d entities", inc.EffectiveType(), src, len(inc.Entities)),
	}); err != nil {
		return err
	}

	unblock := inc.EffectiveType() == schemas.TypeUnblock
	ev := event{seq: seq, incident: inc, source: src}
	durErr := error(nil)
	if !unblock {
		d, err := c.cfg.Guardrails.duration(inc.DurationSeconds)
		durErr = err
		ev.expiresAt = c.cfg.Now().Add(d).UTC().Truncate(0)
	}

	// Translate and guard every entity first; refusals are recorded and
	// never stop the rest. Two spellings of one attacker are one block.
	var (
		mu      sync.Mutex
		seen    = make(map[string]bool, len(inc.Entities))
		targets []target
		recs    []schemas.AuditRecord
		idx     []int
	)
	for i, e := range inc.Entities {
		t, err := translate(e, inc.Scope)
		if err == nil && !unblock {
			err = cmpErr(durErr, c.cfg.Guardrails.checkAddress(t))
		}
		rec := schemas.AuditRecord{IncidentID: inc.ID, EventSeq: seq, Kind: e.Type, BlockKey: t.key, Actor: actor}
		if err != nil {
			if err := c.recordRefusal(&mu, &audits, seq, i, rec, err); err != nil {
				return err
			}
			continue
		}
		if seen[t.key] {
			continue
		}
		seen[t.key] = true
		targets, recs, idx = append(targets, t), append(recs, rec), append(idx, i)
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
				o, err = c.store.unblock(ctx, targets[j])
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

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
