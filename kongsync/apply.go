package kongsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// apply performs the plan's writes in order. It stops at the first failure that will not go away
// by itself (credentials, DB-less, Kong unavailable after retries, lease lost) and goes on past
// writes Kong refused, which it returns as failures.
func (s *Syncer) apply(ctx context.Context, plan *Plan, valid func() bool) (int, []string, error) {
	done := 0
	var failures []string
	for i := range plan.Ops {
		op := &plan.Ops[i]
		if valid != nil && !valid() {
			return done, failures, errLeaseLost
		}
		var err error
		switch op.Action {
		case ActionCreate, ActionUpdate:
			err = s.api.putPlugin(ctx, op.plugin)
			if errors.Is(err, ErrConflict) {
				err = s.resolveConflict(ctx, plan, op)
			}
		case ActionDelete:
			err = s.api.deletePlugin(ctx, op.ID)
		}
		switch {
		case err == nil:
			op.done = true
			done++
		case errors.Is(err, errOccupied):
		case ctx.Err() != nil, errors.Is(err, ErrUnauthorized), errors.Is(err, ErrDBLess), errors.Is(err, ErrUnavailable):
			return done, failures, err
		default:
			failures = append(failures, fmt.Sprintf("%s %s %s: %v", op.Action, op.Name, op.Scope, err))
		}
	}
	return done, failures, nil
}

// errOccupied: a write found a user-owned instance at its scope; reported as a risk, not a failure.
var errOccupied = errors.New("scope occupied by a user-owned plugin")

// resolveConflict handles a 409 on a PUT: Kong holds another plugin of that name at that scope,
// or with that instance name, which the plan did not see (it appeared since Kong was read). It
// re-reads Kong; a managed plugin (tag, name and scope checked) is adopted and written under its
// own id; a user-owned one is reported as a risk and left alone.
func (s *Syncer) resolveConflict(ctx context.Context, plan *Plan, op *Op) error {
	plugins, err := s.api.listPlugins(ctx)
	if err != nil {
		return err
	}
	instance := str(op.plugin.InstanceName)
	for _, k := range plugins {
		if str(k.ID) == op.ID {
			continue
		}
		sameScope := str(k.Name) == op.Name && scopeOf(k) == op.Scope
		sameInstance := instance != "" && str(k.InstanceName) == instance
		switch {
		case sameScope && hasTag(k, ManagedTag):
			adopted := *op.plugin
			adopted.ID = k.ID
			if err := s.api.putPlugin(ctx, &adopted); err != nil {
				return err
			}
			s.log.Info().Str("id", str(k.ID)).Str("scope", op.Scope.String()).Msg("adopted a managed plugin found under another id")
			for i := range plan.Instances {
				if plan.Instances[i].ID == op.ID {
					plan.Instances[i].ID, plan.Instances[i].plugin = str(k.ID), &adopted
				}
			}
			op.ID, op.plugin = str(k.ID), &adopted
			return nil
		case sameScope:
			plan.addRisk(RiskOccupied, k, op.Scope, op.Entries)
			plan.Instances = slices.DeleteFunc(plan.Instances, func(in Instance) bool { return in.ID == op.ID })
			return errOccupied
		case sameInstance && hasTag(k, ManagedTag):
			// A stale managed plugin holds the instance name: it is ours, so it may go.
			if err := s.api.deletePlugin(ctx, str(k.ID)); err != nil {
				return err
			}
			return s.api.putPlugin(ctx, op.plugin)
		case sameInstance:
			return fmt.Errorf("instance name %q is taken by user-owned plugin %s: %w", instance, str(k.ID), ErrConflict)
		}
	}
	// The conflicting plugin is gone already: try once more.
	return s.api.putPlugin(ctx, op.plugin)
}
