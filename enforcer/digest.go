package enforcer

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"sync/atomic"
	"unsafe"
)

// Header, cookie and query values and whole tokens are blocked by SHA-256 (the bucket never
// holds them raw), so matching one costs a SHA-256 of the request's value: about 95ns for a
// short value here, more than the whole lookup budget. Clients repeat their values (an API
// key, a session cookie, a token on every request), so digests are cached by a 128-bit
// fingerprint of the value under two secret seeds: a hit costs two maphash calls and one
// cache line. The cache holds fingerprints and digests, never values.
//
// The cache is two-way set associative (a value may sit in either slot of its pair), so two
// busy values that map to the same place do not evict each other on every request. Each
// slot is a seqlock of atomics: readers never block or allocate, a writer that finds a slot
// busy skips it, and a torn read is detected and treated as a miss.
const (
	digestCacheBits = 14 // 16384 slots of 64 bytes: 1 MiB per index
	digestCacheSize = 1 << digestCacheBits
)

type digestSlot struct {
	seq    atomic.Uint64 // odd while a writer fills the slot
	fp1    atomic.Uint64
	fp2    atomic.Uint64
	digest [4]atomic.Uint64
	_      uint64 // pad to a cache line
}

type digestCache struct {
	seed1, seed2 maphash.Seed
	slots        []digestSlot
}

func newDigestCache() *digestCache {
	return &digestCache{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), slots: make([]digestSlot, digestCacheSize)}
}

// sum returns SHA-256(v) into out, from the cache when v was seen recently.
func (c *digestCache) sum(v string, out *[32]byte) {
	fp1, fp2 := maphash.String(c.seed1, v), maphash.String(c.seed2, v)
	pair := fp1 & (digestCacheSize - 2)
	if c.slots[pair].get(fp1, fp2, out) || c.slots[pair+1].get(fp1, fp2, out) {
		return
	}
	*out = sha256.Sum256(unsafe.Slice(unsafe.StringData(v), len(v))) // read only: no copy needed
	// The victim alternates with a bit the slot index does not use.
	s := &c.slots[pair|(fp1>>32)&1]
	seq := s.seq.Load()
	if seq&1 == 1 || !s.seq.CompareAndSwap(seq, seq+1) {
		return // another request is filling this slot
	}
	s.fp1.Store(fp1)
	s.fp2.Store(fp2)
	for i := range s.digest {
		s.digest[i].Store(binary.LittleEndian.Uint64(out[8*i:]))
	}
	s.seq.Store(seq + 2)
}

// get copies the slot's digest into out if the slot holds fp1, fp2 and was not being
// written meanwhile.
func (s *digestSlot) get(fp1, fp2 uint64, out *[32]byte) bool {
	seq := s.seq.Load()
	if seq&1 == 1 || s.fp1.Load() != fp1 || s.fp2.Load() != fp2 {
		return false
	}
	var d [4]uint64
	for i := range d {
		d[i] = s.digest[i].Load()
	}
	if s.seq.Load() != seq {
		return false
	}
	for i := range d {
		binary.LittleEndian.PutUint64(out[8*i:], d[i])
	}
	return true
}
