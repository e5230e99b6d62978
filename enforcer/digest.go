package enforcer

import (
	"crypto/sha256"
	"hash/maphash"
	"sync/atomic"
	"unsafe"
)

// Header, cookie and query values and whole tokens are blocked by SHA-256 (the bucket never
// holds them raw), so matching one costs a SHA-256 of the request's value (about 85 ns for a
// short value here) and a probe of the hashed map (three cache lines). Clients repeat their
// values (an API key, a session cookie, a token on every request), so the outcome of a
// lookup is cached, keyed by a 128-bit fingerprint of (namespace, value) under two secret
// seeds, together with the generation of the shard it was read from. The answer is reused
// only while that shard is the same one (its generation unchanged): any change to the
// shard, or a new index, makes the entry a miss. A hit costs two maphash calls, one cache
// line and the shard's header. The cache holds fingerprints and outcomes, never values.
//
// Two-way set associative, so two busy values that map to the same place do not evict each
// other; each slot a seqlock of atomics: readers never block or allocate, a writer that
// finds a slot busy skips it, and a torn read is a miss.
const (
	lookupCacheBits = 14 // 16384 slots of 64 bytes: 1 MiB per index
	lookupCacheSize = 1 << lookupCacheBits
)

type lookupSlot struct {
	seq atomic.Uint64 // odd while a writer fills the slot
	fp1 atomic.Uint64
	fp2 atomic.Uint64
	// what is shard index << 40 | found << 32 | the entry's sidx (see entry).
	what atomic.Uint64
	exp  atomic.Uint64 // the entry's exp
	gen  atomic.Uint64 // the shard's generation (0: the shard was empty)
	_    [2]uint64     // pad to a cache line
}

const foundBit = 1 << 32

type lookupCache struct {
	seed1, seed2 maphash.Seed
	slots        []lookupSlot
}

func newLookupCache() *lookupCache {
	return &lookupCache{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), slots: make([]lookupSlot, lookupCacheSize)}
}

// get reads a slot holding fp1, fp2, or reports false.
func (s *lookupSlot) get(fp1, fp2 uint64) (what, exp, gen uint64, ok bool) {
	seq := s.seq.Load()
	if seq&1 == 1 || s.fp1.Load() != fp1 || s.fp2.Load() != fp2 {
		return 0, 0, 0, false
	}
	what, exp, gen = s.what.Load(), s.exp.Load(), s.gen.Load()
	return what, exp, gen, s.seq.Load() == seq
}

func (s *lookupSlot) put(fp1, fp2, what, exp, gen uint64) {
	seq := s.seq.Load()
	if seq&1 == 1 || !s.seq.CompareAndSwap(seq, seq+1) {
		return // another request is filling this slot
	}
	s.fp1.Store(fp1)
	s.fp2.Store(fp2)
	s.what.Store(what)
	s.exp.Store(exp)
	s.gen.Store(gen)
	s.seq.Store(seq + 2)
}

// lookupValue looks up the block on SHA-256(v) in namespace ns, from the cache when v was
// looked up recently and its shard has not changed since.
func (x *index) lookupValue(ns uint32, v string) (rule, bool) {
	c := x.lookups
	fp1 := maphash.String(c.seed1, v) ^ mix64(uint64(ns)+1)
	fp2 := maphash.String(c.seed2, v) + uint64(ns)
	pair := fp1 & (lookupCacheSize - 2)
	for j := range uint64(2) {
		what, exp, gen, ok := c.slots[pair+j].get(fp1, fp2)
		if !ok {
			continue
		}
		s := x.hashed.shards[what>>40].Load()
		switch {
		case s == nil && gen == 0:
			return rule{}, false
		case s == nil || s.gen != gen:
			continue // the shard changed: look again
		case what&foundBit == 0:
			return rule{}, false
		}
		// The entry's rule, from the slot: the entry itself stays out of the cache.
		return s.rule(&entry[hashKey]{exp: int64(exp), sidx: uint32(what)}), true
	}
	d := sha256.Sum256(unsafe.Slice(unsafe.StringData(v), len(v))) // read only: no copy needed
	k := makeHashKey(ns, &d)
	h := hashKeyHash(k)
	si := shardOf(h)
	s := x.hashed.shards[si].Load()
	var what, exp, gen uint64 = si << 40, 0, 0
	r, found := rule{}, false
	if s != nil {
		gen = s.gen
		if pos := s.pos(k, h); pos >= 0 {
			e := &s.entries[pos]
			what |= foundBit | uint64(e.sidx)
			exp = uint64(e.exp)
			r, found = s.rule(e), true
		}
	}
	// Into an empty slot of the pair if there is one; otherwise the victim depends on the
	// value, so that two values sharing a pair do not always evict the same slot.
	victim := pair | (fp1>>32)&1
	if c.slots[victim].seq.Load() != 0 && c.slots[victim^1].seq.Load() == 0 {
		victim ^= 1
	}
	c.slots[victim].put(fp1, fp2, what, exp, gen)
	return r, found
}
