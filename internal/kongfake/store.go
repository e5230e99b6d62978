package kongfake

import (
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

// state is every entity the fake holds, with the indexes Kong's unique keys need, so that tests
// with thousands of entities stay fast. Callers hold Server.mu and change it only through the
// add/remove methods, which keep the indexes.
type state struct {
	services  map[string]*Service
	routes    map[string]*Route
	consumers map[string]*Consumer
	plugins   map[string]*Plugin

	serviceNames  map[string]string // name → id
	routeNames    map[string]string
	consumerNames map[string]string // username → id
	pluginScopes  map[string]string // scopeKey → id
	instanceNames map[string]string // instance_name → id
}

func newState() *state {
	return &state{
		services: map[string]*Service{}, routes: map[string]*Route{},
		consumers: map[string]*Consumer{}, plugins: map[string]*Plugin{},
		serviceNames: map[string]string{}, routeNames: map[string]string{}, consumerNames: map[string]string{},
		pluginScopes: map[string]string{}, instanceNames: map[string]string{},
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
	return st.services[st.serviceNames[idOrName]]
}

func (st *state) route(idOrName string) *Route {
	if isUUID(idOrName) {
		return st.routes[strings.ToLower(idOrName)]
	}
	return st.routes[st.routeNames[idOrName]]
}

func (st *state) consumer(idOrUsername string) *Consumer {
	if isUUID(idOrUsername) {
		if c := st.consumers[strings.ToLower(idOrUsername)]; c != nil {
			return c
		}
	}
	return st.consumers[st.consumerNames[idOrUsername]]
}

func (st *state) addService(svc *Service) {
	st.services[svc.ID] = svc
	if svc.Name != "" {
		st.serviceNames[svc.Name] = svc.ID
	}
}

func (st *state) addRoute(rt *Route) {
	st.routes[rt.ID] = rt
	if rt.Name != "" {
		st.routeNames[rt.Name] = rt.ID
	}
}

func (st *state) addConsumer(c *Consumer) {
	st.consumers[c.ID] = c
	if c.Username != "" {
		st.consumerNames[c.Username] = c.ID
	}
}

// removeService deletes a service and, as Kong's cascade does, the plugins scoped to it.
func (st *state) removeService(id string) {
	if svc := st.services[id]; svc != nil {
		delete(st.serviceNames, svc.Name)
		delete(st.services, id)
		st.removePluginsOf(func(p *Plugin) bool { return p.Service == id })
	}
}

func (st *state) removeRoute(id string) {
	if rt := st.routes[id]; rt != nil {
		delete(st.routeNames, rt.Name)
		delete(st.routes, id)
		st.removePluginsOf(func(p *Plugin) bool { return p.Route == id })
	}
}

func (st *state) removeConsumer(id string) {
	if c := st.consumers[id]; c != nil {
		delete(st.consumerNames, c.Username)
		delete(st.consumers, id)
		st.removePluginsOf(func(p *Plugin) bool { return p.Consumer == id })
	}
}

// conflict returns Kong's 409 when p would share its scope or instance name with another plugin.
func (st *state) conflict(p *Plugin) *kongError {
	if id, ok := st.pluginScopes[p.scopeKey()]; ok && id != p.ID {
		return uniqueViolation(p.scopeText())
	}
	if id, ok := st.instanceNames[p.InstanceName]; ok && p.InstanceName != "" && id != p.ID {
		return uniqueViolation(`{instance_name="` + p.InstanceName + `"}`)
	}
	return nil
}

// putPlugin stores p, replacing the plugin of the same id.
func (st *state) putPlugin(p *Plugin) {
	st.removePlugin(p.ID)
	st.plugins[p.ID] = p
	st.pluginScopes[p.scopeKey()] = p.ID
	if p.InstanceName != "" {
		st.instanceNames[p.InstanceName] = p.ID
	}
}

func (st *state) removePlugin(id string) {
	p := st.plugins[id]
	if p == nil {
		return
	}
	delete(st.plugins, id)
	delete(st.pluginScopes, p.scopeKey())
	if p.InstanceName != "" {
		delete(st.instanceNames, p.InstanceName)
	}
}

func (st *state) removePluginsOf(match func(*Plugin) bool) {
	for id, p := range st.plugins {
		if match(p) {
			st.removePlugin(id)
		}
	}
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
