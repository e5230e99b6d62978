package kongfake

import (
	"maps"
	"slices"
	"strings"

	"github.com/google/uuid"
)

// Service is a Kong service as the fake keeps it.
type Service struct {
	ID, Name  string
	Host      string
	Port      int
	Protocol  string
	Path      string
	Tags      []string
	CreatedAt int64
}

// Route is a Kong route; Service is its service's id ("" when it has none).
type Route struct {
	ID, Name  string
	Service   string
	Paths     []string
	Hosts     []string
	Methods   []string
	Protocols []string
	Tags      []string
	CreatedAt int64
}

// Consumer is a Kong consumer.
type Consumer struct {
	ID, Username, CustomID string
	Tags                   []string
	CreatedAt              int64
}

// Plugin is a Kong plugin instance. Service, Route and Consumer are the ids of its scope ("" for
// none: all empty is a global plugin). Config holds every field of the plugin's schema, Kong's
// defaults filled in, as Kong answers it.
type Plugin struct {
	ID           string
	Name         string
	InstanceName string
	Service      string
	Route        string
	Consumer     string
	Config       map[string]any
	Enabled      bool
	Protocols    []string
	Tags         []string
	CreatedAt    int64
	UpdatedAt    int64
}

// clone deep-copies p so callers never share the fake's maps and slices.
func (p Plugin) clone() Plugin {
	p.Config = cloneValue(p.Config).(map[string]any)
	p.Protocols = slices.Clone(p.Protocols)
	p.Tags = slices.Clone(p.Tags)
	return p
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return map[string]any{}
		}
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = cloneValue(x)
		}
		return m
	case []any:
		if v == nil {
			return v
		}
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = cloneValue(x)
		}
		return s
	}
	return v
}

// scopeKey is Kong's uniqueness key of a plugin: its name and scope (the cache key).
func (p *Plugin) scopeKey() string {
	return p.Name + "|" + p.Service + "|" + p.Route + "|" + p.Consumer
}

// scopeText is how Kong names a unique violation on a plugin's scope.
func (p *Plugin) scopeText() string {
	ref := func(id string) string {
		if id == "" {
			return "null"
		}
		return `{id="` + id + `"}`
	}
	return `{consumer=` + ref(p.Consumer) + `,name="` + p.Name + `",route=` + ref(p.Route) + `,service=` + ref(p.Service) + `}`
}

// entity is Kong's JSON form of the plugin.
func (p *Plugin) entity() map[string]any {
	ref := func(id string) any {
		if id == "" {
			return nil
		}
		return map[string]any{"id": id}
	}
	var instance any
	if p.InstanceName != "" {
		instance = p.InstanceName
	}
	var tags any
	if len(p.Tags) > 0 {
		tags = slices.Clone(p.Tags)
	}
	return map[string]any{
		"id": p.ID, "name": p.Name, "instance_name": instance,
		"service": ref(p.Service), "route": ref(p.Route), "consumer": ref(p.Consumer),
		"config": cloneValue(p.Config), "enabled": p.Enabled, "protocols": slices.Clone(p.Protocols),
		"tags": tags, "created_at": p.CreatedAt, "updated_at": p.UpdatedAt,
	}
}

func (s *Service) entity() map[string]any {
	return map[string]any{
		"id": s.ID, "name": nullable(s.Name), "host": s.Host, "port": s.Port, "protocol": s.Protocol,
		"path": nullable(s.Path), "tags": nullableList(s.Tags), "created_at": s.CreatedAt, "updated_at": s.CreatedAt,
		"retries": 5, "connect_timeout": 60000, "write_timeout": 60000, "read_timeout": 60000,
		"enabled": true, "client_certificate": nil, "tls_verify": nil, "tls_verify_depth": nil, "ca_certificates": nil,
	}
}

func (r *Route) entity() map[string]any {
	var svc any
	if r.Service != "" {
		svc = map[string]any{"id": r.Service}
	}
	return map[string]any{
		"id": r.ID, "name": nullable(r.Name), "service": svc, "paths": nullableList(r.Paths),
		"hosts": nullableList(r.Hosts), "methods": nullableList(r.Methods), "protocols": slices.Clone(r.Protocols),
		"tags": nullableList(r.Tags), "created_at": r.CreatedAt, "updated_at": r.CreatedAt,
		"strip_path": true, "preserve_host": false, "regex_priority": 0, "path_handling": "v0",
		"https_redirect_status_code": 426, "request_buffering": true, "response_buffering": true,
	}
}

func (c *Consumer) entity() map[string]any {
	return map[string]any{
		"id": c.ID, "username": nullable(c.Username), "custom_id": nullable(c.CustomID),
		"tags": nullableList(c.Tags), "created_at": c.CreatedAt, "updated_at": c.CreatedAt,
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullableList(s []string) any {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// state is every entity the fake holds. Callers hold Server.mu.
type state struct {
	services  map[string]*Service
	routes    map[string]*Route
	consumers map[string]*Consumer
	plugins   map[string]*Plugin
}

func newState() *state {
	return &state{
		services: map[string]*Service{}, routes: map[string]*Route{},
		consumers: map[string]*Consumer{}, plugins: map[string]*Plugin{},
	}
}

// isUUID: Kong reads a path segment as an id when it is a UUID, as the endpoint key otherwise.
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

func (st *state) service(idOrName string) *Service {
	if isUUID(idOrName) {
		return st.services[strings.ToLower(idOrName)]
	}
	for _, s := range st.services {
		if s.Name != "" && s.Name == idOrName {
			return s
		}
	}
	return nil
}

func (st *state) route(idOrName string) *Route {
	if isUUID(idOrName) {
		return st.routes[strings.ToLower(idOrName)]
	}
	for _, r := range st.routes {
		if r.Name != "" && r.Name == idOrName {
			return r
		}
	}
	return nil
}

func (st *state) consumer(idOrUsername string) *Consumer {
	if isUUID(idOrUsername) {
		if c := st.consumers[strings.ToLower(idOrUsername)]; c != nil {
			return c
		}
	}
	for _, c := range st.consumers {
		if c.Username != "" && c.Username == idOrUsername {
			return c
		}
	}
	return nil
}

// conflict returns Kong's 409 when p would share its scope or instance name with another plugin.
func (st *state) conflict(p *Plugin) *kongError {
	for _, o := range st.plugins {
		if o.ID == p.ID {
			continue
		}
		if o.scopeKey() == p.scopeKey() {
			return uniqueViolation(p.scopeText())
		}
		if p.InstanceName != "" && o.InstanceName == p.InstanceName {
			return uniqueViolation(`{instance_name="` + p.InstanceName + `"}`)
		}
	}
	return nil
}

// deletePluginsOf removes the plugins scoped to a deleted entity, as Kong's cascade does.
func (st *state) deletePluginsOf(match func(*Plugin) bool) {
	maps.DeleteFunc(st.plugins, func(_ string, p *Plugin) bool { return match(p) })
}

// sortedPlugins returns the plugins matching keep, in id order (Kong's list order is by primary
// key, which keeps pages stable).
func (st *state) sortedPlugins(keep func(*Plugin) bool) []*Plugin {
	out := make([]*Plugin, 0, len(st.plugins))
	for _, p := range st.plugins {
		if keep(p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Plugin) int { return strings.Compare(a.ID, b.ID) })
	return out
}
