package enforcer

import (
	"maps"
	"sync/atomic"
)

// shardBits sets the number of shards of a cowMap. A change copies one shard, so with 1M
// blocks spread over 4096 shards a change copies about 250 entries (a few microseconds),
// while a reader pays one atomic load on top of the map lookup.
const (
	shardBits = 12
	nShards   = 1 << shardBits
	shardMask = nShards - 1
)

// shard is one immutable part of a cowMap once published: readers may use it without a
// lock because the writer never changes a published shard, it replaces it.
type shard[K comparable] struct {
	m map[K]rule
	// minExp is the earliest expiry in m (0 when nothing in it expires), so the expiry sweep
	// skips shards with nothing due.
	minExp int64
}

// cowMap is a map split into copy-on-write shards: lookups are an atomic load and a map
// lookup (no lock, no allocation); a change copies only the shard it touches. There is one
// writer (the mirror's goroutine); any number of readers.
type cowMap[K comparable] struct {
	shards [nShards]atomic.Pointer[shard[K]]
}

// get looks k up; h is k's shard hash (see the *Hash functions).
func (c *cowMap[K]) get(k K, h uint64) (rule, bool) {
	s := c.shards[h&shardMask].Load()
	if s == nil {
		return rule{}, false
	}
	r, ok := s.m[k]
	return r, ok
}

// each calls fn for every entry of the shards as they are now; it is safe to run beside the
// writer because published shards never change.
func (c *cowMap[K]) each(fn func(K, rule)) {
	for i := range c.shards {
		s := c.shards[i].Load()
		if s == nil {
			continue
		}
		for k, r := range s.m {
			fn(k, r)
		}
	}
}

// txn collects the changes of one batch. In build mode (the map is not yet visible to
// readers) shards are changed in place; otherwise each touched shard is copied once per
// batch and the copies are published by commit.
type txn[K comparable] struct {
	c     *cowMap[K]
	build bool
	owned map[uint64]*shard[K]
}

func newTxn[K comparable](c *cowMap[K], build bool) *txn[K] {
	return &txn[K]{c: c, build: build}
}

// shard returns the writable shard for hash h.
func (t *txn[K]) shard(h uint64) *shard[K] {
	i := h & shardMask
	if s, ok := t.owned[i]; ok {
		return s
	}
	old := t.c.shards[i].Load()
	if t.build {
		if old == nil {
			old = &shard[K]{m: make(map[K]rule)}
			t.c.shards[i].Store(old)
		}
		return old
	}
	s := &shard[K]{}
	if old != nil {
		s.m, s.minExp = maps.Clone(old.m), old.minExp
	} else {
		s.m = make(map[K]rule, 1)
	}
	if t.owned == nil {
		t.owned = make(map[uint64]*shard[K])
	}
	t.owned[i] = s
	return s
}

// peek reads k as the batch sees it, without copying anything.
func (t *txn[K]) peek(k K, h uint64) (rule, bool) {
	if s, ok := t.owned[h&shardMask]; ok {
		r, ok := s.m[k]
		return r, ok
	}
	return t.c.get(k, h)
}

// set stores r under k, or deletes k when r is empty.
func (t *txn[K]) set(k K, h uint64, r rule) {
	s := t.shard(h)
	if r.empty() {
		delete(s.m, k)
		return
	}
	s.m[k] = r
	if e := r.minExp(); e != 0 && (s.minExp == 0 || e < s.minExp) {
		s.minExp = e
	}
}

// commit publishes every shard copied by the batch.
func (t *txn[K]) commit() {
	for i, s := range t.owned {
		t.c.shards[i].Store(s)
	}
	t.owned = nil
}

// sweep removes what expired at or before now from the shards that have something due, and
// reports each removed block through gone. It runs on the writer only.
func (c *cowMap[K]) sweep(now int64, build bool, gone func(K, scopeKey)) {
	for i := range c.shards {
		old := c.shards[i].Load()
		if old == nil || old.minExp == 0 || old.minExp > now {
			continue
		}
		s := old
		if !build {
			s = &shard[K]{m: maps.Clone(old.m)}
		}
		s.minExp = 0
		for k, r := range s.m {
			nr := r.expire(now, func(sc scopeKey) { gone(k, sc) })
			if nr.empty() {
				delete(s.m, k)
				continue
			}
			if nr != r {
				s.m[k] = nr
			}
			if e := nr.minExp(); e != 0 && (s.minExp == 0 || e < s.minExp) {
				s.minExp = e
			}
		}
		if !build {
			c.shards[i].Store(s)
		}
	}
}
