package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// RebuildConfig configures Rebuild. JS is required.
type RebuildConfig struct {
	JS jetstream.JetStream
	// Names of the stream and bucket; zero fields take broker's defaults.
	Names broker.Names
	// Guardrails as configured for serve: the rebuilt state applies them too.
	Guardrails Guardrails
	// DryRun computes and reports the difference without writing.
	DryRun bool
	// Progress, when set, is told how many incidents were read of how many.
	Progress func(done, total uint64)
	// Actor names the rebuild in audit records. Default "rebuild".
	Actor  string
	Logger zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// RebuildReport says what the log implies and what had to change.
type RebuildReport struct {
	Incidents int      `json:"incidents"`        // incidents read from the log
	Invalid   int      `json:"invalid"`          // of which not valid (dead-lettered when they came)
	Active    int      `json:"active"`           // active blocks the log implies now
	Create    []string `json:"create,omitempty"` // keys missing from the bucket
	Update    []string `json:"update,omitempty"` // keys whose expiry differs
	Remove    []string `json:"remove,omitempty"` // keys the log does not justify
	Unchanged int      `json:"unchanged"`        // keys already right
	Applied   bool     `json:"applied"`          // false on a dry run
}

// Rebuild recomputes the state of the blocks bucket from the incident log,
// in order — blocks, extensions, unblocks, expiries, guardrails — compares
// it with the bucket and applies the difference. It is the proof that the
// log is the truth: wipe the bucket, rebuild, and the same blocks are back.
func Rebuild(ctx context.Context, cfg RebuildConfig) (*RebuildReport, error) {
	if cfg.JS == nil {
		return nil, errors.New("configure rebuild: JS is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Actor == "" {
		cfg.Actor = "rebuild"
	}
	if err := cfg.Guardrails.defaults(); err != nil {
		return nil, err
	}
	names := cfg.Names.WithDefaults()
	rep := &RebuildReport{}
	want, err := foldLog(ctx, cfg, names.IncidentStream, rep)
	if err != nil {
		return nil, err
	}
	now := cfg.Now()
	for k, b := range want {
		if !b.ExpiresAt.After(now) {
			delete(want, k)
		}
	}
	rep.Active = len(want)

	l := &Lister{js: cfg.JS, bucket: names.BlocksBucket, now: func() time.Time { return now }}
	have := map[string]schemas.Block{}
	revs := map[string]uint64{}
	err = l.scan(ctx, broker.KVPrefix(names.BlocksBucket)+">", func(key string, b schemas.Block, rev uint64) error {
		have[key], revs[key] = b, rev
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", names.BlocksBucket, err)
	}
	for k, b := range want {
		cur, ok := have[k]
		switch {
		case !ok:
			rep.Create = append(rep.Create, k)
		case cur.ExpiresAt.Sub(b.ExpiresAt).Abs() > time.Second:
			rep.Update = append(rep.Update, k)
		default:
			rep.Unchanged++
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			rep.Remove = append(rep.Remove, k)
		}
	}
	sort.Strings(rep.Create)
	sort.Strings(rep.Update)
	sort.Strings(rep.Remove)
	if cfg.DryRun {
		return rep, nil
	}
	if err := applyRebuild(ctx, cfg, names, rep, want, revs); err != nil {
		return rep, err
	}
	rep.Applied = true
	return rep, nil
}

// foldLog plays the incident log into the state it implies, with the same
// plan the pipeline makes for each incident.
func foldLog(ctx context.Context, cfg RebuildConfig, stream string, rep *RebuildReport) (map[string]*schemas.Block, error) {
	state := map[string]*schemas.Block{}
	err := broker.Scan(ctx, cfg.JS, stream, jetstream.OrderedConsumerConfig{}, func(m jetstream.Msg, done, total uint64) error {
		if cfg.Progress != nil && (done%10000 == 0 || done == total) {
			cfg.Progress(done, total)
		}
		rep.Incidents++
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read incident metadata: %w", err)
		}
		inc, err := schemas.ParseIncident(m.Data())
		if err != nil {
			rep.Invalid++
			return nil
		}
		// Applied as of when it was stored, so old incidents count as they did then.
		p := makePlan(&cfg.Guardrails, inc, m.Headers(), meta.Timestamp, meta.Timestamp)
		foldPlan(state, p, meta.Sequence.Stream, cfg.Guardrails.MaxActiveBlocks)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read incident log: %w", err)
	}
	return state, nil
}

// foldPlan applies one incident's plan to an in-memory state exactly as
// store.block and store.unblock apply it to the bucket.
func foldPlan(state map[string]*schemas.Block, p plan, seq uint64, maxActive int) {
	ev := p.event(seq)
	for _, s := range p.steps {
		if s.err != nil || s.dup {
			continue
		}
		key := s.t.key
		if p.unblock {
			delete(state, key)
			continue
		}
		cur := state[key]
		if cur != nil && cur.ExpiresAt.After(p.at) {
			if next, changed := extend(*cur, ev); changed {
				*cur = next
			}
			continue
		}
		if cur == nil && len(state) >= maxActive && pruneExpired(state, p.at) >= maxActive {
			continue // the ceiling refused it
		}
		b := newBlock(s.t, ev)
		state[key] = &b
	}
}

// pruneExpired drops blocks over at time at and returns how many remain.
func pruneExpired(state map[string]*schemas.Block, at time.Time) int {
	for k, b := range state {
		if !b.ExpiresAt.After(at) {
			delete(state, k)
		}
	}
	return len(state)
}

// applyRebuild writes the difference, each change audited.
func applyRebuild(ctx context.Context, cfg RebuildConfig, names broker.Names, rep *RebuildReport,
	want map[string]*schemas.Block, revs map[string]uint64) error {
	kv, err := cfg.JS.KeyValue(ctx, names.BlocksBucket)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", names.BlocksBucket, err)
	}
	s := &store{kv: kv, pub: cfg.JS, putPrefix: broker.KVPrefix(names.BlocksBucket), markerTTL: broker.BlockMarkerTTL, now: cfg.Now, opTimeout: 10 * time.Second}
	a := &auditor{pub: cfg.JS, subject: names.AuditSubject, actor: cfg.Actor, now: cfg.Now}
	runID := cfg.Now().UTC().Format("20060102T150405.000000000")
	var audits pending
	write := func(key string, action schemas.Action, detail string, kind schemas.EntityType) error {
		return a.publish(&audits, "rebuild:"+runID+":"+key, schemas.AuditRecord{
			Action: action, BlockKey: key, Kind: kind, Detail: "rebuilt from the log: " + detail})
	}
	for _, k := range rep.Create {
		b := want[k]
		data, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode block %s: %w", k, err)
		}
		if _, err := kv.Create(ctx, k, data, jetstream.KeyTTL(ttlUntil(b.ExpiresAt, cfg.Now()))); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("create block %s: %w", k, err)
		}
		if err := write(k, schemas.ActionBlocked, "until "+b.ExpiresAt.Format(time.RFC3339), b.Kind); err != nil {
			return err
		}
	}
	for _, k := range rep.Update {
		b := want[k]
		data, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode block %s: %w", k, err)
		}
		if err := s.putWithTTL(ctx, k, data, b.ExpiresAt, revs[k]); err != nil {
			return err
		}
		if err := write(k, schemas.ActionExtended, "expiry set to "+b.ExpiresAt.Format(time.RFC3339), b.Kind); err != nil {
			return err
		}
	}
	for _, k := range rep.Remove {
		err := kv.Purge(ctx, k, jetstream.LastRevision(revs[k]), jetstream.PurgeTTL(broker.BlockMarkerTTL))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("remove block %s: %w", k, err)
		}
		kind := schemas.EntityType("")
		if parts, err := schemas.ParseBlockKey(k); err == nil {
			kind = parts.Kind
		}
		if err := write(k, schemas.ActionUnblocked, "not justified by the log", kind); err != nil {
			return err
		}
	}
	return audits.wait(ctx)
}
