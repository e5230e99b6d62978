package enforcer

import (
	"math/bits"
	"sync/atomic"
)

// shardBits sets the number of shards of a cowMap. A change rebuilds one shard, so with 1M
// blocks over 4096 shards a change touches about 250 entries (a few microseconds), while a
// reader pays one atomic load on top of the lookup.
const (
	shardBits = 12
	nShards   = 1 << shardBits
)

// Keys are hashed once to 64 well-mixed bits: the top shardBits pick the shard, the low bits
// the slot in the shard's table, and bits 32-39 are a tag that rules out most other keys
// without reading them.
func shardOf(h uint64) uint64 { return h >> (64 - shardBits) }
func tagOf(h uint64) uint32   { return uint32(h>>32) & 0xff }

// entry is one key and its rule, stored without pointers (for address and digest keys) so
// the garbage collector skips a million of them instead of scanning them on every cycle:
// the rare scoped blocks sit in the shard's scoped list, referenced by position.
type entry[K comparable] struct {
	k    K
	exp  int64
	sidx uint32 // 1 + position in shard.scoped; 0 = no scoped blocks
}

// shard is one immutable part of a cowMap: a compact open-addressing table built once and
// never changed, so readers need no lock. index is at most half full; each used slot holds
// the tag (top 8 bits) and the position + 1 of the entry (low 24 bits). A lookup reads the
// shard, one line of index and one entry: three cache lines, where a Go map of this size
// reads five.
type shard[K comparable] struct {
	index   []uint32
	entries []entry[K]
	scoped  []*scopeSet
	mask    uint64
	// minExp is the earliest expiry in the shard (0 when nothing in it expires), so the
	// expiry sweep skips shards with nothing due.
	minExp int64
	// gen is unique among the shards of one cowMap (and never 0): the lookup cache knows
	// by it that a shard is the one it read.
	gen uint64
}

// pos is where k sits in s.entries, or -1; h is hash(k). It is the one probe loop of the
// index: find, cowMap.get and the digest cache are built on it.
func (s *shard[K]) pos(k K, h uint64) int {
	tag := tagOf(h)
	for i := h & s.mask; ; i = (i + 1) & s.mask {
		v := s.index[i]
		if v == 0 {
			return -1
		}
		if v>>24 == tag {
			if p := int(v&0xffffff - 1); s.entries[p].k == k {
				return p
			}
		}
	}
}

func (s *shard[K]) find(k K, h uint64) (rule, bool) {
	if p := s.pos(k, h); p >= 0 {
		return s.rule(&s.entries[p]), true
	}
	return rule{}, false
}

func (s *shard[K]) rule(e *entry[K]) rule {
	r := rule{exp: e.exp}
	if e.sidx != 0 {
		r.scoped = s.scoped[e.sidx-1]
	}
	return r
}

// freeze builds the immutable shard holding m.
func freeze[K comparable](m map[K]rule, hash func(K) uint64, gen uint64) *shard[K] {
	if len(m) == 0 {
		return nil
	}
	size := uint64(1) << bits.Len(uint(2*len(m)-1)) // a power of two ≥ 2·len
	s := &shard[K]{index: make([]uint32, size), entries: make([]entry[K], 0, len(m)), mask: size - 1, gen: gen}
	for k, r := range m {
		h := hash(k)
		i := h & s.mask
		for s.index[i] != 0 {
			i = (i + 1) & s.mask
		}
		e := entry[K]{k: k, exp: r.exp}
		if r.scoped != nil {
			s.scoped = append(s.scoped, r.scoped)
			e.sidx = uint32(len(s.scoped))
		}
		s.entries = append(s.entries, e)
		s.index[i] = tagOf(h)<<24 | uint32(len(s.entries))
		if e := r.minExp(); e != 0 && (s.minExp == 0 || e < s.minExp) {
			s.minExp = e
		}
	}
	return s
}

// thaw returns a mutable copy of s's contents.
func (s *shard[K]) thaw() map[K]rule {
	if s == nil {
		return map[K]rule{}
	}
	m := make(map[K]rule, len(s.entries)+1)
	for i := range s.entries {
		m[s.entries[i].k] = s.rule(&s.entries[i])
	}
	return m
}

// cowMap is a map split into copy-on-write shards: a lookup is an atomic load and a probe
// (no lock, no allocation); a change rebuilds only the shard it touches. There is one
// writer (the mirror's goroutine); any number of readers.
type cowMap[K comparable] struct {
	shards [nShards]atomic.Pointer[shard[K]]
	hash   func(K) uint64
	gen    uint64 // the last shard generation given out; writer only
	// draft queues, per shard, the changes made while the index is being built and not yet
	// visible; each shard is built once, at publish. Appending is sequential work, where
	// updating 4096 growing maps would touch memory all over a million entries. Writer only.
	draft [][]draftOp[K]
}

// draftOp is one queued change of a shard under construction.
type draftOp[K comparable] struct {
	k   K
	sc  scopeKey
	exp int64
	ns  uint32
	del bool
}

// get looks k up; h is hash(k).
func (c *cowMap[K]) get(k K, h uint64) (rule, bool) {
	s := c.shards[shardOf(h)].Load()
	if s == nil {
		return rule{}, false
	}
	return s.find(k, h)
}

func (c *cowMap[K]) nextGen() uint64 {
	c.gen++
	return c.gen
}

// each calls fn for every entry of the published shards; it is safe to run beside the
// writer because published shards never change.
func (c *cowMap[K]) each(fn func(K, rule)) {
	for i := range c.shards {
		if s := c.shards[i].Load(); s != nil {
			for i := range s.entries {
				fn(s.entries[i].k, s.rule(&s.entries[i]))
			}
		}
	}
}

// publishDrafts builds the shards of an index under construction from their queued changes,
// reporting the change in blocks per namespace to count.
func (c *cowMap[K]) publishDrafts(count func(ns uint32, d int)) {
	for i, ops := range c.draft {
		if len(ops) == 0 {
			continue
		}
		m := make(map[K]rule, len(ops))
		for _, o := range ops {
			nr, d := change(m[o.k], o.sc, o.exp, o.del)
			if nr.empty() {
				delete(m, o.k)
			} else {
				m[o.k] = nr
			}
			count(o.ns, d)
		}
		c.shards[i].Store(freeze(m, c.hash, c.nextGen()))
		c.draft[i] = nil // let the queue go as soon as its shard is built
	}
	c.draft = nil
}

// txn collects the changes of one batch: each touched shard is thawed once and frozen again
// at commit, so a burst of changes to one shard costs one rebuild.
type txn[K comparable] struct {
	c     *cowMap[K]
	build bool
	owned map[uint64]map[K]rule
}

func newTxn[K comparable](c *cowMap[K], build bool) *txn[K] {
	return &txn[K]{c: c, build: build}
}

// shard returns the writable copy of shard i.
func (t *txn[K]) shard(i uint64) map[K]rule {
	if m, ok := t.owned[i]; ok {
		return m
	}
	m := t.c.shards[i].Load().thaw()
	if t.owned == nil {
		t.owned = make(map[uint64]map[K]rule)
	}
	t.owned[i] = m
	return m
}

// update sets the block for scope sc on key k to expire at exp, or removes it (del), and
// reports the change in blocks of namespace ns to count. In build mode the change is
// queued for publishDrafts.
func (t *txn[K]) update(k K, h uint64, sc scopeKey, exp int64, del bool, ns uint32, count func(uint32, int)) {
	i := shardOf(h)
	if t.build {
		if t.c.draft == nil {
			t.c.draft = make([][]draftOp[K], nShards)
		}
		t.c.draft[i] = append(t.c.draft[i], draftOp[K]{k: k, sc: sc, exp: exp, ns: ns, del: del})
		return
	}
	m := t.shard(i)
	nr, d := change(m[k], sc, exp, del)
	if nr.empty() {
		delete(m, k)
	} else {
		m[k] = nr
	}
	count(ns, d)
}

// commit publishes every shard the batch changed.
func (t *txn[K]) commit() {
	for i, m := range t.owned {
		t.c.shards[i].Store(freeze(m, t.c.hash, t.c.nextGen()))
	}
	t.owned = nil
}

// sweep removes what expired at or before now from the published shards that have
// something due, and reports each removed block through gone. Writer only.
func (c *cowMap[K]) sweep(now int64, gone func(K, scopeKey)) {
	for i := range c.shards {
		old := c.shards[i].Load()
		if old == nil || old.minExp == 0 || old.minExp > now {
			continue
		}
		m := old.thaw()
		for k, r := range m {
			nr := r.expire(now, func(sc scopeKey) { gone(k, sc) })
			if nr.empty() {
				delete(m, k)
			} else if nr != r {
				m[k] = nr
			}
		}
		c.shards[i].Store(freeze(m, c.hash, c.nextGen()))
	}
}
