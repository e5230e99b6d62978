package enforcer

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/gaissmai/bart"

	"github.com/blockwire/blockwire/schemas"
)

// op is one change from the bucket (or the snapshot): a block set to expire at exp, or
// removed.
type op struct {
	del   bool
	parts schemas.KeyParts
	exp   int64 // Unix ms; noExpiry when the value had no readable expiresAt
}

// writer owns one index and is its only mutator; it runs on the mirror's goroutine. While
// build is true the index is not visible to readers yet and is changed in place; after
// publish, every change goes through copy-on-write.
type writer struct {
	idx        *index
	build      bool
	ids        map[nsKey]uint32
	names      []nsKey
	perNS      []int64 // blocks per namespace id
	perKind    [nKinds]int64
	rangeMin   int64 // earliest expiry among ranges, 0 when none
	planStale  bool
	namesStale bool
}

func newWriter() *writer {
	w := &writer{idx: newIndex(), build: true, ids: map[nsKey]uint32{}, names: fixedNames()}
	for i, k := range w.names {
		w.ids[k] = uint32(i)
	}
	w.perNS = make([]int64, len(w.names))
	return w
}

// published freezes the built index and switches the writer to copy-on-write: the caller
// is about to make the index visible to readers.
func (w *writer) published() {
	if !w.build {
		return
	}
	w.idx.addrs.publishDrafts(w.count)
	w.idx.hashed.publishDrafts(w.count)
	w.idx.plain.publishDrafts(w.count)
	w.build = false
	w.publishMeta()
}

// errBadValue marks an op whose key cannot be placed in the index.
var errBadValue = errors.New("block key cannot be indexed")

// batch is one set of changes applied together: each touched shard is copied once.
type batch struct {
	w      *writer
	addrs  *txn[addrKey]
	hashed *txn[hashKey]
	plain  *txn[strKey]
	ranges *bart.Table[rule]
}

func (w *writer) begin() *batch {
	return &batch{
		w:      w,
		addrs:  newTxn(&w.idx.addrs, w.build),
		hashed: newTxn(&w.idx.hashed, w.build),
		plain:  newTxn(&w.idx.plain, w.build),
		ranges: w.idx.ranges.Load(),
	}
}

// commit publishes the batch: shards first, then the plan, so a request that sees a new
// header name in the plan also finds its blocks.
func (b *batch) commit() {
	b.addrs.commit()
	b.hashed.commit()
	b.plain.commit()
	b.w.idx.ranges.Store(b.ranges)
	b.w.publishMeta()
}

// apply applies ops in one batch. An op that cannot be indexed is skipped and reported in
// the returned error; the others still apply.
func (w *writer) apply(ops []op, now int64) error {
	b := w.begin()
	var errs []error
	for i := range ops {
		if err := b.apply(&ops[i], now); err != nil {
			errs = append(errs, err)
		}
	}
	b.commit()
	return errors.Join(errs...)
}

// change returns r with the block for scope sc set to exp (or removed when del), and the
// change in the number of blocks.
func change(r rule, sc scopeKey, exp int64, del bool) (rule, int) {
	if del {
		nr, existed := r.without(sc)
		if existed {
			return nr, -1
		}
		return nr, 0
	}
	nr, existed := r.with(sc, exp)
	if existed {
		return nr, 0
	}
	return nr, 1
}

func (b *batch) apply(o *op, now int64) error {
	p := &o.parts
	sc := scopeKey{service: p.Service, route: p.Route}
	del := o.del || o.exp <= now // an expired block is as good as gone
	w := b.w
	switch p.Kind {
	case schemas.EntityIP:
		a, err := netip.ParseAddr(p.Value)
		if err != nil {
			return fmt.Errorf("%w: ip %q: %w", errBadValue, p.Value, err)
		}
		k := keyOf(a.Unmap())
		b.addrs.update(k, addrHash(k), sc, o.exp, del, nsIP, w.count)
	case schemas.EntityCIDR:
		pfx, err := netip.ParsePrefix(p.Value)
		if err != nil {
			return fmt.Errorf("%w: cidr %q: %w", errBadValue, p.Value, err)
		}
		pfx = pfx.Masked()
		r, _ := b.ranges.Get(pfx)
		nr, d := change(r, sc, o.exp, del)
		b.setRange(pfx, nr)
		w.count(nsCIDR, d)
	case schemas.EntityHeader, schemas.EntityCookie, schemas.EntityQuery, schemas.EntityJWT:
		if p.Kind == schemas.EntityJWT && p.Name != "" {
			return b.applyPlain(nsKey{kind: p.Kind, name: p.Name}, p.Value, sc, o.exp, del)
		}
		var digest [32]byte
		if !decodeHex32(p.Value, &digest) {
			return fmt.Errorf("%w: %s value is not a hex SHA-256", errBadValue, p.Kind)
		}
		key := nsKey{kind: p.Kind, name: p.Name}
		if p.Kind == schemas.EntityJWT {
			key.name = ""
		}
		ns, ok := w.ns(key, !del)
		if !ok {
			return nil // deleting under a name never seen: nothing to do
		}
		k := makeHashKey(ns, &digest)
		b.hashed.update(k, hashKeyHash(k), sc, o.exp, del, ns, w.count)
	case schemas.EntityConsumer:
		return b.applyPlain(nsKey{kind: p.Kind}, p.Value, sc, o.exp, del)
	default:
		return fmt.Errorf("%w: unknown kind %q", errBadValue, p.Kind)
	}
	return nil
}

func (b *batch) applyPlain(key nsKey, value string, sc scopeKey, exp int64, del bool) error {
	w := b.w
	ns, ok := w.ns(key, !del)
	if !ok {
		return nil
	}
	k := strKey{ns: ns, v: value}
	b.plain.update(k, strKeyHash(k), sc, exp, del, ns, w.count)
	return nil
}

func (b *batch) setRange(pfx netip.Prefix, r rule) {
	w := b.w
	switch {
	case r.empty() && w.build:
		b.ranges.Delete(pfx)
	case r.empty():
		b.ranges = b.ranges.DeletePersist(pfx)
	case w.build:
		b.ranges.Insert(pfx, r)
	default:
		b.ranges = b.ranges.InsertPersist(pfx, r)
	}
	if e := r.minExp(); e != 0 && (w.rangeMin == 0 || e < w.rangeMin) {
		w.rangeMin = e
	}
}

// ns returns the namespace id of key, creating it when create is set.
func (w *writer) ns(key nsKey, create bool) (uint32, bool) {
	if id, ok := w.ids[key]; ok {
		return id, true
	}
	if !create {
		return 0, false
	}
	id := uint32(len(w.names))
	w.ids[key] = id
	w.names = append(w.names, key)
	w.perNS = append(w.perNS, 0)
	w.namesStale = true
	return id, true
}

// count records d blocks added (or removed) in namespace ns.
func (w *writer) count(ns uint32, d int) {
	if d == 0 {
		return
	}
	before := w.perNS[ns]
	w.perNS[ns] += int64(d)
	w.perKind[kindIndex(w.names[ns].kind)] += int64(d)
	if (before == 0) != (w.perNS[ns] == 0) {
		w.planStale = true
	}
}

// publishMeta publishes what changed besides the maps: namespace names, the plan and the
// per-kind counts.
func (w *writer) publishMeta() {
	if w.namesStale {
		names := append([]nsKey(nil), w.names...)
		w.idx.names.Store(&names)
		w.namesStale = false
	}
	if w.planStale {
		w.idx.plan.Store(w.makePlan())
		w.planStale = false
	}
	for i, n := range w.perKind {
		w.idx.counts[i].Store(n)
	}
}

func (w *writer) makePlan() *plan {
	p := &plan{}
	for id, k := range w.names {
		if w.perNS[id] == 0 {
			continue
		}
		switch {
		case uint32(id) == nsIP || uint32(id) == nsCIDR:
			p.ip = true
		case uint32(id) == nsConsumer:
			p.consumer = true
		case uint32(id) == nsToken:
			p.token = true
		case k.kind == schemas.EntityHeader:
			p.headers = append(p.headers, nsRef{name: k.name, id: uint32(id)})
		case k.kind == schemas.EntityCookie:
			p.cookies.add(k.name, uint32(id))
		case k.kind == schemas.EntityQuery:
			p.query.add(k.name, uint32(id))
		case k.kind == schemas.EntityJWT:
			p.claims.add(k.name, uint32(id))
		}
	}
	return p
}

// sweep drops every block that expired at or before now. Requests already ignore them (the
// expiry is checked at match time); the sweep frees memory and, when a kind or name loses
// its last block, lets requests skip the PDK calls it needed.
func (w *writer) sweep(now int64) {
	gone := func(ns uint32) { w.count(ns, -1) }
	if w.build {
		return // nothing is visible yet; expired puts were dropped as they came
	}
	w.idx.addrs.sweep(now, func(addrKey, scopeKey) { gone(nsIP) })
	w.idx.hashed.sweep(now, func(k hashKey, _ scopeKey) { gone(k.ns) })
	w.idx.plain.sweep(now, func(k strKey, _ scopeKey) { gone(k.ns) })
	if w.rangeMin != 0 && w.rangeMin <= now {
		w.sweepRanges(now)
	}
	w.publishMeta()
}

// sweepRanges removes expired blocks from the ranges table. Only sweep calls it, never
// while the index is being built, so the published table is copied, never changed.
func (w *writer) sweepRanges(now int64) {
	t := w.idx.ranges.Load()
	type rangeChange struct {
		pfx netip.Prefix
		r   rule
	}
	var changes []rangeChange
	w.rangeMin = 0
	for pfx, r := range t.All() {
		nr := r.expire(now, func(scopeKey) { w.count(nsCIDR, -1) })
		if nr != r {
			changes = append(changes, rangeChange{pfx, nr})
		}
		if e := nr.minExp(); e != 0 && (w.rangeMin == 0 || e < w.rangeMin) {
			w.rangeMin = e
		}
	}
	if len(changes) == 0 {
		return
	}
	// A few changes copy their paths; many copy the table once.
	clone := len(changes) > 64
	if clone {
		t = t.Clone()
	}
	for _, c := range changes {
		switch {
		case clone:
			if c.r.empty() {
				t.Delete(c.pfx)
			} else {
				t.Insert(c.pfx, c.r)
			}
		case c.r.empty():
			t = t.DeletePersist(c.pfx)
		default:
			t = t.InsertPersist(c.pfx, c.r)
		}
	}
	w.idx.ranges.Store(t)
}
