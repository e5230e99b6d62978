package kongfake

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// Seeding and inspection from Go: no HTTP request, nothing recorded, but the same Kong rules.

// AddService creates a service named name (host example.internal) and returns its id.
func (s *Server) AddService(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.service(name) != nil {
		s.tb.Fatalf("kongfake: service %q exists", name)
	}
	svc := &Service{ID: uuid.NewString(), Name: name, Host: "example.internal", Port: 80, Protocol: "http", CreatedAt: now()}
	s.st.addService(svc)
	return svc.ID
}

// AddRoute creates a route named name on the service with id serviceID ("" for none), matching
// the path /<name>, and returns its id.
func (s *Server) AddRoute(name, serviceID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if serviceID != "" && s.st.services[serviceID] == nil {
		s.tb.Fatalf("kongfake: no service %s for route %q", serviceID, name)
	}
	if s.st.route(name) != nil {
		s.tb.Fatalf("kongfake: route %q exists", name)
	}
	rt := &Route{ID: uuid.NewString(), Name: name, Service: serviceID, Paths: []string{"/" + name},
		Protocols: []string{"http", "https"}, CreatedAt: now()}
	s.st.addRoute(rt)
	return rt.ID
}

// AddConsumer creates a consumer with this username and returns its id.
func (s *Server) AddConsumer(username string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.consumer(username) != nil {
		s.tb.Fatalf("kongfake: consumer %q exists", username)
	}
	c := &Consumer{ID: uuid.NewString(), Username: username, CreatedAt: now()}
	s.st.addConsumer(c)
	return c.ID
}

// AddPlugin creates a plugin from Kong's JSON form, e.g.
//
//	map[string]any{"name": "ip-restriction", "route": map[string]any{"id": rid},
//		"config": map[string]any{"allow": []string{"10.0.0.0/8"}}}
//
// under the same rules as POST /plugins (an "id" key makes it a PUT). Kong's refusal is the error.
func (s *Server) AddPlugin(body map[string]any) (Plugin, error) {
	doc, err := normalize(body)
	if err != nil {
		return Plugin{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, _ := doc["id"].(string)
	p, kerr := s.buildPlugin(s.st, doc, strings.ToLower(id), nil)
	if kerr != nil {
		return Plugin{}, kerr
	}
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	if _, _, kerr := s.store(p, s.st.plugins[p.ID], 0); kerr != nil {
		return Plugin{}, kerr
	}
	return p.clone(), nil
}

// EditPlugin changes a stored plugin as a PATCH would (config merged field by field, arrays
// replaced whole), e.g. to simulate someone editing a managed plugin by hand.
func (s *Server) EditPlugin(id string, patch map[string]any) error {
	doc, err := normalize(patch)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.st.plugins[id]
	if cur == nil {
		return fmt.Errorf("kongfake: no plugin %s", id)
	}
	p, kerr := s.buildPlugin(s.st, mergePatch(cur.writableForm(), doc), cur.ID, nil)
	if kerr != nil {
		return kerr
	}
	_, _, kerr = s.store(p, cur, 0)
	if kerr != nil {
		return kerr
	}
	return nil
}

// RemovePlugin deletes a plugin, as an operator would by hand.
func (s *Server) RemovePlugin(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.removePlugin(id)
}

// Plugins returns a copy of every plugin, in id order.
func (s *Server) Plugins() []Plugin {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Plugin
	for _, p := range s.st.sortedPlugins(func(*Plugin) bool { return true }) {
		out = append(out, p.clone())
	}
	return out
}

// Plugin returns a copy of one plugin.
func (s *Server) Plugin(id string) (Plugin, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.st.plugins[id]
	if !ok {
		return Plugin{}, false
	}
	return p.clone(), true
}

// ConfigStrings reads a list field of a plugin's config (e.g. "deny") as strings, sorted.
func (p Plugin) ConfigStrings(field string) []string {
	list, _ := p.Config[field].([]any)
	out := make([]string, 0, len(list))
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// HasTag reports whether the plugin carries tag.
func (p Plugin) HasTag(tag string) bool {
	for _, t := range p.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// normalize turns Go values ([]string, structs) into what a JSON body decodes to.
func normalize(body map[string]any) (map[string]any, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("kongfake: encode plugin: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("kongfake: decode plugin: %w", err)
	}
	return doc, nil
}
