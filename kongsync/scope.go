package kongsync

import (
	"strings"

	"github.com/google/uuid"
	"github.com/kong/go-kong/kong"
)

// Plugin names and the tag the sync owns.
const (
	// ManagedTag marks every entity the sync writes. The sync never touches an entity without it.
	ManagedTag = "managed-by-blockwire"

	pluginIPRestriction = "ip-restriction"
	pluginTermination   = "request-termination"
)

// idNamespace roots the deterministic plugin ids (UUIDv5). It is arbitrary but must never change:
// changing it would orphan every managed plugin (they would be adopted again through their tag,
// at the cost of a rewrite).
const idNamespace = "6b1f4c2e-4a39-5b0e-9d55-9f3c1e0b7a21"

// Scope is where a plugin applies, by Kong entity ids; all empty is global.
type Scope struct {
	Service  string `json:"service,omitempty"`
	Route    string `json:"route,omitempty"`
	Consumer string `json:"consumer,omitempty"`
}

// String names the scope for logs, audit and status: "global", "service=<id>", "route=<id>",
// "consumer=<id>", or a combination joined by ",".
func (s Scope) String() string {
	var parts []string
	if s.Consumer != "" {
		parts = append(parts, "consumer="+s.Consumer)
	}
	if s.Route != "" {
		parts = append(parts, "route="+s.Route)
	}
	if s.Service != "" {
		parts = append(parts, "service="+s.Service)
	}
	if len(parts) == 0 {
		return "global"
	}
	return strings.Join(parts, ",")
}

// scopeOf reads a plugin's scope.
func scopeOf(p *kong.Plugin) Scope {
	var s Scope
	if p.Service != nil && p.Service.ID != nil {
		s.Service = *p.Service.ID
	}
	if p.Route != nil && p.Route.ID != nil {
		s.Route = *p.Route.ID
	}
	if p.Consumer != nil && p.Consumer.ID != nil {
		s.Consumer = *p.Consumer.ID
	}
	return s
}

// rank is Kong's plugin precedence for the scope: for one request, of the instances of a plugin
// that apply, only the one of lowest rank runs (docs "Plugin precedence"; consumer groups are
// not used by the open-source Admin API and left out).
func (s Scope) rank() int {
	c, r, v := s.Consumer != "", s.Route != "", s.Service != ""
	switch {
	case c && r && v:
		return 1
	case c && r:
		return 3
	case c && v:
		return 4
	case r && v:
		return 7
	case c:
		return 8
	case r:
		return 10
	case v:
		return 11
	}
	return 12
}

// overlaps reports whether some request could match both scopes. routeService gives a route's
// service id ("" when unknown), because a route-scoped plugin also constrains the service.
func overlaps(a, b Scope, routeService func(string) string) bool {
	if a.Consumer != "" && b.Consumer != "" && a.Consumer != b.Consumer {
		return false
	}
	if a.Route != "" && b.Route != "" && a.Route != b.Route {
		return false
	}
	services := map[string]bool{}
	for _, s := range []Scope{a, b} {
		if s.Service != "" {
			services[s.Service] = true
		}
		if s.Route != "" {
			if svc := routeService(s.Route); svc != "" {
				services[svc] = true
			}
		}
	}
	return len(services) <= 1
}

// PluginID is the deterministic id of the managed plugin of this name at this scope in this
// workspace: a UUIDv5, so that every replica and every restart writes the same entity and a write
// is an idempotent PUT /plugins/{id}.
func PluginID(workspace, name string, s Scope) string {
	ns := uuid.MustParse(idNamespace)
	key := strings.Join([]string{"v1", workspace, name, s.Service, s.Route, s.Consumer}, "|")
	return uuid.NewSHA1(ns, []byte(key)).String()
}

// instanceName names a managed plugin in Kong Manager and the Admin API; Kong wants it unique per
// workspace, which the scope guarantees. Only letters, digits and ".-_~" are allowed.
func instanceName(name string, s Scope) string {
	prefix := "blockwire-deny"
	if name == pluginTermination {
		prefix = "blockwire-block"
	}
	if s == (Scope{}) {
		return prefix + "-global"
	}
	var b strings.Builder
	b.WriteString(prefix)
	for _, p := range []struct{ what, id string }{{"consumer", s.Consumer}, {"route", s.Route}, {"service", s.Service}} {
		if p.id != "" {
			b.WriteString("-" + p.what + "-" + p.id)
		}
	}
	return b.String()
}
