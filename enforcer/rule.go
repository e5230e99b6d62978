package enforcer

import (
	"math"
	"slices"
)

// noExpiry stands for a block without a readable expiresAt: it stays until its key is
// deleted from the bucket.
const noExpiry = math.MaxInt64

// scopeKey is a block's Kong scope (service and route names or ids); the zero value means
// everywhere.
type scopeKey struct {
	service, route string
}

func (s scopeKey) global() bool { return s.service == "" && s.route == "" }

// scopedRule is a block limited to a service and/or route.
type scopedRule struct {
	scopeKey
	exp int64 // Unix milliseconds
}

// scopeSet lists the scoped blocks on one match key. It is immutable once stored.
type scopeSet struct {
	rules []scopedRule
}

// rule is what the index holds under one match key (an address, a prefix, a value hash...):
// the unscoped block's expiry, and the blocks limited to a service or route. Values are
// immutable; changes store a new rule.
type rule struct {
	exp    int64 // Unix milliseconds; 0 = no unscoped block
	scoped *scopeSet
}

func (r rule) empty() bool { return r.exp == 0 && r.scoped == nil }

// blocks reports whether the unscoped block is active at now (Unix ms). Expiry is checked
// here, at match time, so a block stops at its expiresAt to the millisecond, whenever the
// server's TTL marker or the local sweep removes it.
func (r rule) blocks(now int64) bool { return r.exp > now }

// candidates reports whether scoped blocks may apply at now; the caller then needs the
// request's service and route to decide.
func (r rule) candidates(now int64) bool {
	if r.scoped == nil {
		return false
	}
	for _, s := range r.scoped.rules {
		if s.exp > now {
			return true
		}
	}
	return false
}

// minExp is the earliest expiry in r that a sweep must act on; 0 when none.
func (r rule) minExp() int64 {
	var m int64
	consider := func(e int64) {
		if e != 0 && e != noExpiry && (m == 0 || e < m) {
			m = e
		}
	}
	consider(r.exp)
	if r.scoped != nil {
		for _, s := range r.scoped.rules {
			consider(s.exp)
		}
	}
	return m
}

// with returns r with the block for scope sc set to expire at exp, and whether that block
// was there before.
func (r rule) with(sc scopeKey, exp int64) (rule, bool) {
	if sc.global() {
		existed := r.exp != 0
		r.exp = exp
		return r, existed
	}
	var rules []scopedRule
	if r.scoped != nil {
		rules = r.scoped.rules
	}
	i := slices.IndexFunc(rules, func(s scopedRule) bool { return s.scopeKey == sc })
	next := make([]scopedRule, len(rules), len(rules)+1)
	copy(next, rules)
	if i >= 0 {
		next[i].exp = exp
	} else {
		next = append(next, scopedRule{scopeKey: sc, exp: exp})
	}
	r.scoped = &scopeSet{rules: next}
	return r, i >= 0
}

// without returns r minus the block for scope sc, and whether it was there.
func (r rule) without(sc scopeKey) (rule, bool) {
	if sc.global() {
		existed := r.exp != 0
		r.exp = 0
		return r, existed
	}
	if r.scoped == nil {
		return r, false
	}
	i := slices.IndexFunc(r.scoped.rules, func(s scopedRule) bool { return s.scopeKey == sc })
	if i < 0 {
		return r, false
	}
	next := slices.Delete(slices.Clone(r.scoped.rules), i, i+1)
	r.scoped = nil
	if len(next) > 0 {
		r.scoped = &scopeSet{rules: next}
	}
	return r, true
}

// expire returns r without the blocks that expired at or before now, calling gone for each.
func (r rule) expire(now int64, gone func(scopeKey)) rule {
	if r.exp != 0 && r.exp <= now {
		r.exp = 0
		gone(scopeKey{})
	}
	if r.scoped == nil {
		return r
	}
	var keep []scopedRule
	changed := false
	for _, s := range r.scoped.rules {
		if s.exp <= now {
			changed = true
			gone(s.scopeKey)
			continue
		}
		keep = append(keep, s)
	}
	if changed {
		r.scoped = nil
		if len(keep) > 0 {
			r.scoped = &scopeSet{rules: keep}
		}
	}
	return r
}

// each calls fn for every block in r (the unscoped one with the zero scopeKey).
func (r rule) each(fn func(scopeKey, int64)) {
	if r.exp != 0 {
		fn(scopeKey{}, r.exp)
	}
	if r.scoped != nil {
		for _, s := range r.scoped.rules {
			fn(s.scopeKey, s.exp)
		}
	}
}
