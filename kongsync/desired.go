package kongsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// entry is what the sync keeps of one block: its kind, canonical value and scope from the key,
// and its expiry from the value. Plugin-only kinds keep no value.
type entry struct {
	kind      schemas.EntityType
	value     string
	service   string
	route     string
	expiresAt time.Time
}

// parseEntry reads a block from its key and stored value.
func parseEntry(key string, value []byte) (entry, error) {
	parts, err := schemas.ParseBlockKey(key)
	if err != nil {
		return entry{}, err
	}
	exp, err := expiresAt(value)
	if err != nil {
		return entry{}, fmt.Errorf("decode block %s: %w", key, err)
	}
	e := entry{kind: parts.Kind, service: parts.Service, route: parts.Route, expiresAt: exp}
	if projected(parts.Kind) {
		e.value = parts.Value
	}
	return e, nil
}

// expiresAt reads a block's expiresAt. Only that field is needed, and decoding whole values was
// most of the time of loading 100,000 blocks, so the field is looked up directly: in JSON a raw
// `"expiresAt":"` can only be a key (inside a string its quotes would be escaped), and a Block
// has no nested object with that key. Anything unexpected takes the full decoder.
func expiresAt(value []byte) (time.Time, error) {
	const field = `"expiresAt":"`
	if i := bytes.Index(value, []byte(field)); i >= 0 {
		rest := value[i+len(field):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
				return t, nil
			}
		}
	}
	var b struct {
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if err := json.Unmarshal(value, &b); err != nil {
		return time.Time{}, err
	}
	return b.ExpiresAt, nil
}

// projected reports whether Kong can enforce the kind natively; the rest are the plugin's.
func projected(k schemas.EntityType) bool {
	return k == schemas.EntityIP || k == schemas.EntityCIDR || k == schemas.EntityConsumer
}

// blockState is the sync's copy of the blocks bucket, kept by the watcher.
type blockState struct {
	mu      sync.Mutex
	entries map[string]entry
	version uint64 // bumped on every change

	// The last desired state, reused while nothing changed and nothing expired: sorting 100,000
	// addresses costs tens of milliseconds per reconcile otherwise.
	cached        *desiredState
	cachedVersion uint64
}

func newBlockState() *blockState { return &blockState{entries: map[string]entry{}} }

func (b *blockState) put(key string, e entry) {
	b.mu.Lock()
	b.entries[key] = e
	b.version++
	b.mu.Unlock()
}

func (b *blockState) remove(key string) {
	b.mu.Lock()
	delete(b.entries, key)
	b.version++
	b.mu.Unlock()
}

// replace swaps in a complete copy (after a watcher restart), so that a reconcile never sees a
// half-loaded bucket and deletes what is merely not loaded yet.
func (b *blockState) replace(entries map[string]entry) {
	b.mu.Lock()
	b.entries = entries
	b.version++
	b.mu.Unlock()
}

// scopeRef is a block's scope as the block names it (Kong names or ids).
type scopeRef struct {
	Service string `json:"service,omitempty"`
	Route   string `json:"route,omitempty"`
}

// consumerRef is a consumer block's target: the consumer (username or id) and its scope.
type consumerRef struct {
	Consumer string
	scopeRef
}

// desiredState is what Kong should enforce natively, before names are resolved to ids.
type desiredState struct {
	deny       map[scopeRef][]string // canonical addresses and ranges per scope, sorted, unique
	consumers  map[consumerRef]bool
	pluginOnly map[schemas.EntityType]int
	blocks     int       // active blocks of every kind
	next       time.Time // the earliest expiry among projected blocks; zero when none
}

// desired computes the desired state at now. A block past its expiresAt is left out even when the
// bucket still holds it: expiresAt is authoritative, the server's TTL marker may come later. The
// result is shared with later calls: callers must not modify it.
func (b *blockState) desired(now time.Time) desiredState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.cached; c != nil && b.cachedVersion == b.version && (c.next.IsZero() || now.Before(c.next)) {
		return *c
	}
	d := desiredState{deny: map[scopeRef][]string{}, consumers: map[consumerRef]bool{}, pluginOnly: map[schemas.EntityType]int{}}
	for _, e := range b.entries {
		if !e.expiresAt.After(now) {
			continue
		}
		d.blocks++
		if !projected(e.kind) {
			d.pluginOnly[e.kind]++
			continue
		}
		if d.next.IsZero() || e.expiresAt.Before(d.next) {
			d.next = e.expiresAt
		}
		ref := scopeRef{Service: e.service, Route: e.route}
		if e.kind == schemas.EntityConsumer {
			d.consumers[consumerRef{Consumer: e.value, scopeRef: ref}] = true
			continue
		}
		d.deny[ref] = append(d.deny[ref], e.value)
	}
	for ref, list := range d.deny {
		d.deny[ref] = sortAddrs(list)
	}
	b.cached, b.cachedVersion = &d, b.version
	return d
}

// sortAddrs sorts canonical addresses and ranges by address then prefix length (IPv4 first) and
// drops duplicates, so that the same blocks always give the same deny list.
func sortAddrs(list []string) []string {
	type item struct {
		p netip.Prefix
		s string
	}
	items := make([]item, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				continue // not canonical; the consumer never writes such a block
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		items = append(items, item{p, s})
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		if c := a.p.Bits() - b.p.Bits(); c != 0 {
			return c
		}
		// "10.0.0.1" and "10.0.0.1/32" are both kept (two blocks), in a fixed order.
		return strings.Compare(a.s, b.s)
	})
	out := make([]string, 0, len(items))
	for i, it := range items {
		if i > 0 && it.s == items[i-1].s {
			continue
		}
		out = append(out, it.s)
	}
	return out
}
