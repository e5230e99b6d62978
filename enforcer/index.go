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
	h  [4]uint64 // the digest as words (a key is compared by one call to its generated equality)
}

func makeHashKey(ns uint32, d *[32]byte) hashKey {
	return hashKey{ns: ns, h: [4]uint64{
		binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:]),
		binary.LittleEndian.Uint64(d[16:]), binary.LittleEndian.Uint64(d[24:]),
	}}
}

func (k hashKey) digest() [32]byte {
	var d [32]byte
	for i, w := range k.h {
		binary.LittleEndian.PutUint64(d[8*i:], w)
	}
	return d
}

// strKey is the match key of plain values: JWT claim values and Kong consumers.
type strKey struct {
	ns uint32
	v  string
}

// Keys hash to 64 well-mixed bits (see shardOf). Addresses and block values come from the
// bucket, not from clients, so nobody who cannot already write blocks can choose keys that
// crowd one shard or one probe sequence.
var strSeed = maphash.MakeSeed()

// mix64 is murmur3's finalizer: every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// addrKey is an address as the index keys it: its 16-byte form, IPv4 as ::ffff:a.b.c.d.
// Both blocks and requests are unmapped first, so an IPv4 address and its IPv4-mapped IPv6
// form are one key. Two words compare faster than a netip.Addr with its zone pointer.
type addrKey struct{ hi, lo uint64 }

func keyOf(a netip.Addr) addrKey {
	b := a.As16()
	return addrKey{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func (k addrKey) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	return netip.AddrFrom16(b).Unmap()
}

func addrHash(k addrKey) uint64 { return mix64(k.hi*0x9e3779b97f4a7c15 ^ k.lo) }

func hashKeyHash(k hashKey) uint64 {
	// The value is already a SHA-256: its first bytes are uniform; mixing in the namespace
	// keeps equal values under two names apart.
	return mix64(k.h[0] ^ uint64(k.ns)<<48)
}

func strKeyHash(k strKey) uint64 {
	return maphash.String(strSeed, k.v) ^ mix64(uint64(k.ns)+1)
}

// nsRef is an active namespace's name and id, as the request matcher needs them.
type nsRef struct {
	name string
	id   uint32
}

// plan says which parts of a request the active blocks need, so a request costs only the
// PDK calls that can change the answer. It is immutable; the writer publishes a new one when
// a kind or name gains its first block or loses its last.
type plan struct {
	ip       bool    // exact addresses or ranges
	headers  []nsRef // header names (lower case) with blocks
	cookies  nameSet // cookie names with blocks
	query    nameSet // query parameter names with blocks
	claims   nameSet // JWT claim names with blocks
	token    bool    // whole-token blocks
	consumer bool
}

// nameSet finds a name's namespace: a few names (the usual case) are compared in a row,
// which beats hashing each cookie or argument name of a request; many go in a map.
type nameSet struct {
	list []nsRef
	m    map[string]uint32
}

const nameSetListMax = 8

func (s *nameSet) add(name string, id uint32) {
	s.list = append(s.list, nsRef{name: name, id: id})
	if len(s.list) > nameSetListMax {
		if s.m == nil {
			s.m = make(map[string]uint32, len(s.list))
			for _, r := range s.list {
				s.m[r.name] = r.id
			}
		}
		s.m[name] = id
	}
}

func (s *nameSet) get(name string) (uint32, bool) {
	if s.m != nil {
		id, ok := s.m[name]
		return id, ok
	}
	for i := range s.list {
		if s.list[i].name == name {
			return s.list[i].id, true
		}
	}
	return 0, false
}

func (s *nameSet) len() int { return len(s.list) }

// needHeaders reports whether the request's headers must be read.
func (p *plan) needHeaders() bool {
	return len(p.headers) > 0 || p.cookies.len() > 0 || p.claims.len() > 0 || p.token
}

func (p *plan) none() bool {
	return !p.ip && !p.needHeaders() && p.query.len() == 0 && !p.consumer
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
	addrs  cowMap[addrKey]
	hashed cowMap[hashKey]
	plain  cowMap[strKey]
	ranges atomic.Pointer[bart.Table[rule]]
	plan   atomic.Pointer[plan]
	names  atomic.Pointer[[]nsKey] // namespace id → kind and name
	counts [nKinds]atomic.Int64    // blocks per kind, for metrics and logs
	// lookups caches the outcome of value lookups (see digest.go).
	lookups *lookupCache
}

func newIndex() *index {
	x := &index{lookups: newLookupCache()}
	x.addrs.hash, x.hashed.hash, x.plain.hash = addrHash, hashKeyHash, strKeyHash
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

// lookupAddr looks up an unmapped address.
func (x *index) lookupAddr(a netip.Addr) (rule, bool) {
	k := keyOf(a)
	return x.addrs.get(k, addrHash(k))
}

// lookupStr looks up a plain value in namespace ns.
func (x *index) lookupStr(ns uint32, v string) (rule, bool) {
	k := strKey{ns: ns, v: v}
	return x.plain.get(k, strKeyHash(k))
}
