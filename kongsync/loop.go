package kongsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwire/blockwire/schemas"
)

// session is what one leadership remembers between reconciles.
type session struct {
	res      *resolver
	applied  map[string]string // instance key → content last left in Kong; nil until a reconcile succeeds
	risks    []string          // risk keys last logged
	dbless   bool
	failures int // consecutive failed reconciles
	drift    int // writes that repaired drift, for the status
	lastOK   time.Time
	// lastFailed is the failure last audited, so that a lasting outage is one record, not one
	// per retry.
	lastFailed string
}

func newSession(api *admin) *session { return &session{res: newResolver(api)} }

// lead runs while this process holds the lease: it watches the bucket and reconciles.
func (s *Syncer) lead(ctx context.Context, l *lease) error {
	s.m.leader.Set(1)
	defer s.m.leader.Set(0)
	state := newBlockState()
	ready := make(chan struct{})
	changes := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchBlocks(gctx, state, ready, changes) })
	g.Go(func() error { return s.loop(gctx, l, state, ready, changes) })
	return g.Wait()
}

// loop decides when to reconcile: at once, then a Window after changes, every Period in full,
// at the next block expiry, and after failures with a growing backoff — never in a hot loop.
func (s *Syncer) loop(ctx context.Context, l *lease, state *blockState, ready <-chan struct{}, changes <-chan struct{}) error {
	select {
	case <-ready:
	case <-ctx.Done():
		return nil
	}
	select {
	case <-changes: // the load itself: the first reconcile below covers it
	default:
	}
	ss := newSession(s.api)
	period := time.NewTicker(s.cfg.Period)
	defer period.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	var nextAt, blockedUntil time.Time
	full := true
	schedule := func(at time.Time) {
		if at.Before(blockedUntil) {
			at = blockedUntil // backing off: changes wait for the retry
		}
		if nextAt.IsZero() || at.Before(nextAt) {
			nextAt = at
		}
	}
	schedule(time.Now())
	for {
		if nextAt.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(max(time.Until(nextAt), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
			if !ss.dbless {
				schedule(time.Now().Add(s.cfg.Window))
			}
		case <-period.C:
			if !ss.dbless {
				full = true
				schedule(time.Now())
			}
		case <-timer.C:
			nextAt = time.Time{}
			wait, next := s.step(ctx, l, ss, state, full)
			full = false
			blockedUntil = time.Time{}
			if wait > 0 {
				blockedUntil = time.Now().Add(wait)
				full = true // after a failure, re-read names as well
				schedule(blockedUntil)
			} else if !next.IsZero() {
				// At the next expiry, but never sooner than a window away: thousands of blocks
				// expiring one by one must not become thousands of writes.
				schedule(time.Now().Add(max(next.Sub(s.cfg.Now()), s.cfg.Window)))
			}
		}
	}
}

// step runs one reconcile and says how long to wait before the next (0: only on events) and when
// the next block expires.
func (s *Syncer) step(ctx context.Context, l *lease, ss *session, state *blockState, full bool) (time.Duration, time.Time) {
	if ss.dbless || full && ss.applied == nil {
		// Check the database mode before the first write of a leadership, and while standing
		// down. A Kong that says it has a database yet answered 405 is tried with one reconcile
		// per recheck, which stands down again quietly.
		db, err := s.api.database(ctx)
		switch {
		case err == nil && db == "off":
			s.standDown(ctx, ss)
			return s.cfg.DBLessRecheck, time.Time{}
		case err != nil && ss.dbless:
			return s.cfg.DBLessRecheck, time.Time{}
		}
	}
	if full {
		ss.res.reset()
	}
	plan, err := s.reconcile(ctx, ss, state, l.valid)
	switch {
	case err == nil:
		ss.failures = 0
		if ss.dbless {
			ss.dbless = false
			s.m.dbless.Set(0)
			s.log.Info().Msg("kong accepts Admin API writes again: kong sync resumes")
		}
		return 0, plan.next
	case ctx.Err() != nil:
		return 0, time.Time{}
	case errors.Is(err, errLeaseLost):
		// The last renewal is late (valid said no). Lost for good, the lease's holder cancels
		// ctx and this loop ends; renewed after all, the reconcile must not wait for the next
		// change or period: it is tried again, in full, after the next renewal is due.
		return s.cfg.LeaseTTL / 3, time.Time{}
	case errors.Is(err, ErrDBLess):
		s.standDown(ctx, ss)
		return s.cfg.DBLessRecheck, time.Time{}
	case errors.Is(err, ErrUnauthorized):
		return s.cfg.AuthRetry, time.Time{}
	}
	ss.failures++
	return min(time.Second<<min(ss.failures-1, 16), s.cfg.FailureBackoff), time.Time{}
}

// standDown stops writing to a DB-less Kong: one clear log line, a gauge, a status.
func (s *Syncer) standDown(ctx context.Context, ss *session) {
	if ss.dbless {
		return
	}
	ss.dbless = true
	s.m.dbless.Set(1)
	s.log.Warn().Str("kong", RedactURL(s.cfg.KongURL)).Dur("recheck", s.cfg.DBLessRecheck).
		Msg("kong runs DB-less and refuses Admin API writes: kong sync stands down; the noname-prevention plugin is the enforcement path there")
	s.storeStatus(ctx, Status{State: StateDBLess, Error: ErrDBLess.Error(), LastSuccess: ss.lastOK})
}

// plan reads Kong and computes the plan, writing nothing.
func (s *Syncer) plan(ctx context.Context, ss *session, state *blockState) (*Plan, error) {
	d := state.desired(s.cfg.Now())
	plugins, err := s.api.listPlugins(ctx)
	if err != nil {
		return nil, err
	}
	pl := &planner{workspace: s.cfg.Kong.Workspace(), message: s.cfg.Message, res: ss.res, applied: ss.applied}
	plan, err := pl.plan(ctx, d, plugins)
	if plan != nil {
		plan.next = d.next
	}
	return plan, err
}

// reconcile reads Kong, plans, writes, and reports: metrics, log, audit, status.
func (s *Syncer) reconcile(ctx context.Context, ss *session, state *blockState, valid func() bool) (*Plan, error) {
	start := time.Now()
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()

	plan, err := s.plan(ctx, ss, state)
	done, failures := 0, []string(nil)
	if err == nil {
		done, failures, err = s.apply(ctx, plan, valid)
	}
	elapsed := time.Since(start)
	s.m.duration.Observe(elapsed.Seconds())

	result := "ok"
	switch {
	case err == nil && len(failures) > 0:
		result = "failed"
	case errors.Is(err, errLeaseLost):
		result = "lease_lost"
	case errors.Is(err, ErrUnauthorized):
		result = "unauthorized"
		s.m.authFails.Inc()
		s.log.Error().Err(err).Str("kong", RedactURL(s.cfg.KongURL)).Dur("retry_in", s.cfg.AuthRetry).
			Msg("kong refused the admin credentials (401/403): check --kong-admin-header; kong sync retries slowly")
	case errors.Is(err, ErrDBLess):
		result = "dbless"
	case err != nil:
		result = "failed"
		s.log.Warn().Err(err).Msg("kong sync reconcile failed, backing off")
	}
	s.m.reconciles.WithLabelValues(result).Inc()

	if plan != nil {
		s.observePlan(ss, plan)
		drift := 0
		for _, op := range plan.Ops {
			if op.done && op.Drift {
				drift++
			}
		}
		if drift > 0 {
			s.m.drift.Add(float64(drift))
			ss.drift += drift
			s.log.Warn().Int("writes", drift).Msg("kong differed from what the sync left there (edited by hand or restored): repaired")
		}
		if err == nil && len(failures) == 0 {
			ss.applied = map[string]string{}
			for _, inst := range plan.Instances {
				ss.applied[inst.key()] = inst.hash
			}
			ss.lastOK = s.cfg.Now()
			s.m.lastOK.Set(float64(ss.lastOK.Unix()))
		}
		if done > 0 {
			s.log.Info().Int("writes", done).Int("managed", len(plan.Instances)).Int("blocks", plan.Blocks).
				Dur("took", elapsed).Msg("kong sync applied")
		}
	}
	if ctx.Err() == nil && !errors.Is(err, errLeaseLost) {
		s.auditPlan(ctx, ss, seq, plan, done, failures, err)
	}
	st := Status{State: StateSynced, Duration: elapsed.Round(time.Millisecond).String(), Writes: done,
		LastSuccess: ss.lastOK, DriftRepaired: ss.drift}
	if plan != nil {
		st.Blocks, st.Instances, st.Risks, st.Unresolved, st.PluginOnly = plan.Blocks, plan.Instances, plan.Risks, plan.Unresolved, plan.PluginOnly
	}
	switch {
	case errors.Is(err, ErrUnauthorized):
		st.State, st.Error = StateUnauthorized, err.Error()
	case errors.Is(err, ErrDBLess):
		st.State, st.Error = StateDBLess, err.Error()
	case err != nil || len(failures) > 0:
		st.State = StateFailing
		st.Error = errors.Join(append([]error{err}, errorsOf(failures)...)...).Error()
	}
	if !errors.Is(err, errLeaseLost) && ctx.Err() == nil {
		s.storeStatus(ctx, st)
	}
	if err == nil && len(failures) > 0 {
		err = fmt.Errorf("kong sync: %d writes failed: %s", len(failures), failures[0])
	}
	return plan, err
}

func errorsOf(msgs []string) []error {
	out := make([]error, len(msgs))
	for i, m := range msgs {
		out[i] = errors.New(m)
	}
	return out
}

// observePlan updates the gauges and logs risks when they change.
func (s *Syncer) observePlan(ss *session, plan *Plan) {
	s.m.managed.Set(float64(len(plan.Instances)))
	s.m.unresolved.Set(float64(len(plan.Unresolved)))
	for _, k := range schemas.EntityTypes() {
		if !projected(k) {
			s.m.pluginOnly.WithLabelValues(string(k)).Set(float64(plan.PluginOnly[k]))
		}
	}
	byKind := map[RiskKind]int{}
	for _, r := range plan.Risks {
		byKind[r.Kind]++
	}
	for _, k := range []RiskKind{RiskBypass, RiskOccupied, RiskShadow} {
		s.m.risks.WithLabelValues(string(k)).Set(float64(byKind[k]))
	}
	sortRisks(plan.Risks)
	keys := riskKeys(plan.Risks)
	if slices.Equal(keys, ss.risks) {
		return
	}
	ss.risks = keys
	for _, r := range plan.Risks {
		s.log.Warn().Str("kind", string(r.Kind)).Str("plugin", r.Plugin).Str("plugin_scope", r.PluginScope.String()).
			Str("managed_scope", r.Scope.String()).Int("missing", r.Missing).Str("risk", r.String()).
			Msg("kong precedence keeps managed deny entries from applying; the noname-prevention plugin still enforces them")
	}
	if len(plan.Risks) == 0 {
		s.log.Info().Msg("no kong bypass risks left")
	}
}
