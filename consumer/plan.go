package consumer

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blockwire/blockwire/schemas"
)

// ReasonExpired: the incident's block would already be over when applied
// (an old incident applied late, or replayed).
const ReasonExpired = "already_expired"

// plan is what one incident asks of the bucket, decided from the incident
// alone: the pipeline applies it, and rebuild folds it into a state. Both
// therefore agree on every block.
type plan struct {
	inc     *schemas.Incident
	source  schemas.Source
	actor   string // "" for this process; "manual:<who>" for the manual API
	unblock bool
	// at is when the incident was stored: a block lasts its duration from
	// then, so its expiry is a function of the log, the same when rebuilt.
	at        time.Time
	expiresAt time.Time
	steps     []step
}

// event is the plan's incident as stored at stream sequence seq.
func (p *plan) event(seq uint64) event {
	return event{seq: seq, incident: p.inc, source: p.source, at: p.at, expiresAt: p.expiresAt}
}

// step is one entity's part of the plan: a target, or why not.
type step struct {
	entity int // index in the incident's entities
	kind   schemas.EntityType
	t      target
	err    error // a refusal
	dup    bool  // the same key as an earlier entity: nothing to do
}

// makePlan translates and guards every entity; refusals never stop the rest.
func makePlan(g *Guardrails, inc *schemas.Incident, h nats.Header, at, now time.Time) plan {
	p := plan{inc: inc, source: sourceOf(h), unblock: inc.EffectiveType() == schemas.TypeUnblock, at: at.UTC()}
	if a := h.Get(schemas.HeaderActor); p.source == schemas.SourceManual && a != "" {
		p.actor = "manual:" + a
	}
	var durErr error
	if !p.unblock {
		d, err := g.duration(inc.DurationSeconds)
		durErr = err
		p.expiresAt = p.at.Add(d)
		if err == nil && !p.expiresAt.After(now) {
			durErr = refuse(ReasonExpired, "the block ended at %s, before it could be applied", p.expiresAt.Format(time.RFC3339))
		}
	}
	seen := make(map[string]bool, len(inc.Entities))
	for i, e := range inc.Entities {
		t, err := translate(e, inc.Scope)
		if err == nil && !p.unblock {
			err = cmpErr(durErr, g.checkAddress(t))
		}
		s := step{entity: i, kind: e.Type, t: t, err: err}
		if err == nil {
			s.dup = seen[t.key] // two spellings of one attacker are one block
			seen[t.key] = true
		}
		p.steps = append(p.steps, s)
	}
	return p
}

// sourceOf says who produced an incident message, from the header the
// webhook and the manual API set; anything else came straight over NATS.
func sourceOf(h nats.Header) schemas.Source {
	switch schemas.Source(h.Get(schemas.HeaderSource)) {
	case schemas.SourceWebhook:
		return schemas.SourceWebhook
	case schemas.SourceManual:
		return schemas.SourceManual
	}
	return schemas.SourceNATS
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
