package replay

import (
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// kv is a block's identity regardless of scope and name: kind and stored
// value (a secret's hash, an address's canonical form).
type kv struct {
	kind  schemas.EntityType
	value string
}

// matcher applies a Filter to the timeline.
type matcher struct {
	f Filter
	// values: what --value names, for each kind it can be (secrets hashed,
	// addresses canonical), so it matches blocks and entities alike.
	values map[kv]bool
	// keys the filtered incident's records named: their later records
	// (expired, applied in Kong) belong to its story too.
	keys map[string]bool
}

func newMatcher(f Filter) *matcher {
	m := &matcher{f: f, keys: map[string]bool{}}
	if f.Value != "" {
		m.values = map[kv]bool{}
		kinds := schemas.EntityTypes()
		if f.Kind != "" {
			kinds = []schemas.EntityType{f.Kind}
		}
		for _, k := range kinds {
			e := schemas.Entity{Type: k, Value: f.Value}
			if k.HasName() {
				e.Name = f.Name
				if e.Name == "" {
					e.Name = "x" // any name: only kind and value are compared for these
				}
			}
			if id, ok := identity(e); ok {
				m.values[id] = true
			}
		}
	}
	return m
}

// identity is an entity's kind and stored value.
func identity(e schemas.Entity) (kv, bool) {
	key, err := consumer.KeyFor(e, nil)
	if err != nil {
		return kv{}, false
	}
	return keyIdentity(key)
}

// keyIdentity is a block key's kind and stored value.

func keyIdentity(key string) (kv, bool) {
	p, err := schemas.ParseBlockKey(key)
	if err != nil {
		return kv{}, false
	}
	return kv{kind: p.Kind, value: p.Value}, true
}

func (m *matcher) match(ev *Event) bool {
	if ev.Audit != nil {
		return m.matchAudit(ev.Audit)
	}
	if m.f.Incident != "" && ev.Incident.ID != m.f.Incident {
		return false
	}
	if m.f.Kind == "" && m.values == nil {
		return true
	}
	if ev.incident == nil {
		return false // not an incident: it names no entity
	}
	for _, e := range ev.incident.Entities {
		if m.f.Kind != "" && e.Type != m.f.Kind {
			continue
		}
		if m.values == nil {
			return true
		}
		if id, ok := identity(e); ok && m.values[id] {
			return true
		}
	}
	return false
}

func (m *matcher) matchAudit(rec *schemas.AuditRecord) bool {
	if m.f.Incident != "" {
		if rec.IncidentID == m.f.Incident {
			if rec.BlockKey != "" {
				m.keys[rec.BlockKey] = true
			}
		} else if !m.keys[rec.BlockKey] {
			return false
		}
	}
	if m.f.Kind != "" && rec.Kind != m.f.Kind {
		return false
	}
	if m.values != nil {
		id, ok := keyIdentity(rec.BlockKey)
		return ok && m.values[id]
	}
	return true
}
