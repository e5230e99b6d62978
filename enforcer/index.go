package enforcer

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync/atomic"

	"github.com/gaissmai/bart"

	"github.com/blockwire/blockwire/schemas"
)

// nsKey names a namespace of match keys: an entity kind, and for header, cookie, query and
// jwt-by-claim blocks the header, cookie, parameter or claim name.
type nsKey struct {
	kind schemas.EntityType
	name string
}

// Namespace ids. The fixed ones come first; one id per (kind, name) follows, assigned by the
// writer as names appear and never reused within one index.
const (
	nsIP       uint32 = iota // exact addresses (cowMap addrs)
	nsCIDR                   // prefixes (bart table)
	nsConsumer               // Kong consumer id or username (cowMap plain)
	nsToken                  // whole-token SHA-256 (cowMap hashed)
	nsFirstDynamic
)

func fixedNames() []nsKey {
	return []nsKey{
		{kind: schemas.EntityIP}, {kind: schemas.EntityCIDR},
		{kind: schemas.EntityConsumer}, {kind: schemas.EntityJWT},
	}
}

// hashKey is the match key of secrets stored as SHA-256: header, cookie and query values
// and whole tokens. Keys are fixed-size so lookups hash them without allocating.
type hashKey struct {
	ns uint32
	h  [32]byte
}

// strKey is the match key of plain values: JWT claim values and Kong consumers.
type strKey struct {
	ns uint32
	v  string
}

// The shard hashes need only spread keys over shards; the maps do the real hashing.
// Addresses and block values come from the bucket, not from clients, so they cannot be
// chosen to crowd a shard by anyone who cannot already write blocks.
var strSeed = maphash.MakeSeed()

func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	return mix(binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:]))
}

func hashKeyHash(k hashKey) uint64 {
	return mix(binary.LittleEndian.Uint64(k.h[:8]) ^ uint64(k.ns))
}

func strKeyHash(k strKey) uint64 {
	return mix(maphash.String(strSeed, k.v) ^ uint64(k.ns))
}

// mix moves the entropy of x into the high bits, which pick the shard.
func mix(x uint64) uint64 { return (x * 0x9E3779B97F4A7C15) >> (64 - shardBits) }

// nsRef is an active namespace's name and id, as the request matcher needs them.
type nsRef struct {
	name string
	id   uint32
}

// plan says which parts of a request the active blocks need, so a request costs only the
// PDK calls that can change the answer. It is immutable; the writer publishes a new one when
// a kind or name gains its first block or loses its last.
type plan struct {
	ip       bool              // exact addresses or ranges
	headers  []nsRef           // header names (lower case) with blocks
	cookies  map[string]uint32 // cookie name → namespace
	query    map[string]uint32 // query parameter name → namespace
	claims   map[string]uint32 // JWT claim name → namespace
	token    bool              // whole-token blocks
	consumer bool
}

// needHeaders reports whether the request's headers must be read.
func (p *plan) needHeaders() bool {
	return len(p.headers) > 0 || len(p.cookies) > 0 || len(p.claims) > 0 || p.token
}

func (p *plan) none() bool {
	return !p.ip && !p.needHeaders() && len(p.query) == 0 && !p.consumer
}

// nKinds is the number of entity kinds; kindIndex maps a kind to 0..nKinds-1.
const nKinds = 7

func kindIndex(k schemas.EntityType) int {
	switch k {
	case schemas.EntityIP:
		return 0
	case schemas.EntityCIDR:
		return 1
	case schemas.EntityHeader:
		return 2
	case schemas.EntityCookie:
		return 3
	case schemas.EntityQuery:
		return 4
	case schemas.EntityJWT:
		return 5
	}
	return 6
}

// index is one generation of the in-memory block list. Readers load it from the mirror and
// use it without locks: every part is either immutable or swapped atomically by the single
// writer. A resync builds a new index and swaps the mirror's pointer.
type index struct {
	addrs  cowMap[netip.Addr]
	hashed cowMap[hashKey]
	plain  cowMap[strKey]
	ranges atomic.Pointer[bart.Table[rule]]
	plan   atomic.Pointer[plan]
	names  atomic.Pointer[[]nsKey] // namespace id → kind and name
	counts [nKinds]atomic.Int64    // blocks per kind, for metrics and logs
}

func newIndex() *index {
	x := &index{}
	x.ranges.Store(new(bart.Table[rule]))
	x.plan.Store(&plan{})
	names := fixedNames()
	x.names.Store(&names)
	return x
}

// entries is the number of blocks (bucket keys) held.
func (x *index) entries() int64 {
	var n int64
	for i := range x.counts {
		n += x.counts[i].Load()
	}
	return n
}

func (x *index) lookupAddr(a netip.Addr) (rule, bool) { return x.addrs.get(a, addrHash(a)) }

func (x *index) lookupHash(ns uint32, h *[32]byte) (rule, bool) {
	k := hashKey{ns: ns, h: *h}
	return x.hashed.get(k, hashKeyHash(k))
}

func (x *index) lookupStr(ns uint32, v string) (rule, bool) {
	k := strKey{ns: ns, v: v}
	return x.plain.get(k, strKeyHash(k))
}
