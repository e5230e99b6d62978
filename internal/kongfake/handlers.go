package kongfake

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
)

// handle answers a request the description allows: a status, a body (nil for none) or Kong's error.
// The request's record gets its status in the same critical section as the state change, so a
// test never sees one without the other.
func (s *Server) handle(r *http.Request, m match, doc map[string]any, rec func() *Request) (int, any, *kongError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	status, out, kerr := s.handleLocked(r, m, doc)
	if kerr != nil {
		status = kerr.status
	}
	if q := rec(); q != nil {
		q.Status = status
	}
	return status, out, kerr
}

func (s *Server) handleLocked(r *http.Request, m match, doc map[string]any) (int, any, *kongError) {
	param := func(name string) string {
		v, err := url.PathUnescape(m.params[name])
		if err != nil {
			return m.params[name]
		}
		return v
	}
	if doc == nil && (r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
		doc = map[string]any{}
	}
	get, del := r.Method == http.MethodGet, r.Method == http.MethodDelete

	switch m.path {
	case "/":
		if get {
			return http.StatusOK, s.info(), nil
		}
	case "/status":
		if get {
			return http.StatusOK, map[string]any{"database": map[string]any{"reachable": true},
				"server": map[string]any{"connections_accepted": 1, "total_requests": len(s.requests) + 1}}, nil
		}
	case "/plugins":
		return s.plugins(r, doc, nil)
	case "/plugins/{plugin_id}":
		return s.plugin(r.Method, param("plugin_id"), doc, nil)
	case "/services/{service_id_or_name}/plugins", "/routes/{route_id_or_name}/plugins",
		"/consumers/{consumer_username_or_id}/plugins":
		parent, kerr := s.parentOf(m.path, param)
		if kerr != nil {
			return 0, nil, kerr
		}
		return s.plugins(r, doc, parent)
	case "/services/{service_id_or_name}/plugins/{plugin_id}", "/routes/{route_id_or_name}/plugins/{plugin_id}",
		"/consumers/{consumer_username_or_id}/plugins/{plugin_id}":
		parent, kerr := s.parentOf(m.path, param)
		if kerr != nil {
			return 0, nil, kerr
		}
		return s.plugin(r.Method, param("plugin_id"), doc, parent)
	case "/services":
		switch r.Method {
		case http.MethodGet:
			return s.listServices(r)
		case http.MethodPost:
			return s.createService(doc)
		}
	case "/services/{service_id_or_name}":
		svc := s.st.service(param("service_id_or_name"))
		switch {
		case get && svc == nil:
			return 0, nil, notFound()
		case get:
			return http.StatusOK, svc.entity(), nil
		case del:
			return s.deleteService(svc)
		}
	case "/routes", "/services/{service_id_or_name}/routes":
		var svc *Service
		if strings.HasPrefix(m.path, "/services/") {
			if svc = s.st.service(param("service_id_or_name")); svc == nil {
				return 0, nil, notFound()
			}
		}
		switch r.Method {
		case http.MethodGet:
			return s.listRoutes(r, svc)
		case http.MethodPost:
			return s.createRoute(doc, svc)
		}
	case "/routes/{route_id_or_name}", "/services/{service_id_or_name}/routes/{route_id_or_name}":
		rt := s.st.route(param("route_id_or_name"))
		if strings.HasPrefix(m.path, "/services/") {
			svc := s.st.service(param("service_id_or_name"))
			if svc == nil || (rt != nil && rt.Service != svc.ID) {
				rt = nil
			}
		}
		switch {
		case get && rt == nil:
			return 0, nil, notFound()
		case get:
			return http.StatusOK, rt.entity(), nil
		case del:
			if rt != nil {
				s.st.removeRoute(rt.ID)
			}
			return http.StatusNoContent, nil, nil
		}
	case "/consumers":
		switch r.Method {
		case http.MethodGet:
			return s.listConsumers(r)
		case http.MethodPost:
			return s.createConsumer(doc)
		}
	case "/consumers/{consumer_username_or_id}":
		c := s.st.consumer(param("consumer_username_or_id"))
		switch {
		case get && c == nil:
			return 0, nil, notFound()
		case get:
			return http.StatusOK, c.entity(), nil
		case del:
			if c != nil {
				s.st.removeConsumer(c.ID)
			}
			return http.StatusNoContent, nil, nil
		}
	}
	s.tb.Errorf("kongfake: %s %s is in Kong's description but the fake does not implement it", r.Method, m.path)
	return 0, nil, &kongError{status: http.StatusNotImplemented, msg: "kongfake: not implemented"}
}

// info is GET /: Kong's node information, with the database mode the sync checks.
func (s *Server) info() map[string]any {
	db := "postgres"
	if s.dbless {
		db = "off"
	}
	available := map[string]any{}
	for _, name := range s.opts.Plugins {
		available[name] = map[string]any{"version": s.opts.Version, "priority": 1000}
	}
	return map[string]any{
		"version": s.opts.Version, "edition": "community", "tagline": "Welcome to kong",
		"node_id": s.nodeID, "hostname": "kongfake", "lua_version": "LuaJIT 2.1.0",
		"configuration": map[string]any{"database": db, "admin_listen": []string{"127.0.0.1:8001"}},
		"plugins":       map[string]any{"available_on_server": available, "enabled_in_cluster": []string{}},
	}
}

// parentOf resolves the entity a nested plugins path names; 404 when it does not exist.
func (s *Server) parentOf(path string, param func(string) string) (*parentRef, *kongError) {
	switch {
	case strings.HasPrefix(path, "/services/"):
		if svc := s.st.service(param("service_id_or_name")); svc != nil {
			return &parentRef{field: "service", id: svc.ID}, nil
		}
	case strings.HasPrefix(path, "/routes/"):
		if rt := s.st.route(param("route_id_or_name")); rt != nil {
			return &parentRef{field: "route", id: rt.ID}, nil
		}
	case strings.HasPrefix(path, "/consumers/"):
		if c := s.st.consumer(param("consumer_username_or_id")); c != nil {
			return &parentRef{field: "consumer", id: c.ID}, nil
		}
	}
	return nil, notFound()
}

func (p *Plugin) under(parent *parentRef) bool {
	if parent == nil {
		return true
	}
	switch parent.field {
	case "service":
		return p.Service == parent.id
	case "route":
		return p.Route == parent.id
	}
	return p.Consumer == parent.id
}

// plugins answers list (GET) and create (POST) on a plugins collection.
func (s *Server) plugins(r *http.Request, doc map[string]any, parent *parentRef) (int, any, *kongError) {
	switch r.Method {
	case http.MethodGet:
		lq, kerr := parseListQuery(r.URL.Query())
		if kerr != nil {
			return 0, nil, kerr
		}
		items := s.st.sortedPlugins(func(p *Plugin) bool { return p.under(parent) })
		pg := paginate(items, func(p *Plugin) string { return p.ID }, func(p *Plugin) []string { return p.Tags },
			(*Plugin).entity, lq)
		return http.StatusOK, pg.answer(r.URL.Path, lq), nil
	case http.MethodPost:
		p, kerr := s.buildPlugin(s.st, doc, "", parent)
		if kerr != nil {
			return 0, nil, kerr
		}
		if p.ID == "" {
			p.ID = uuid.NewString()
		} else if s.st.plugins[p.ID] != nil {
			return 0, nil, &kongError{status: http.StatusConflict, code: 3, name: "primary key violation",
				msg: `primary key violation on key '{id="` + p.ID + `"}'`}
		}
		return s.store(p, nil, http.StatusCreated)
	}
	return s.unimplemented(r.Method, "plugins collection")
}

// plugin answers GET, PUT (upsert), PATCH and DELETE on one plugin.
func (s *Server) plugin(method, id string, doc map[string]any, parent *parentRef) (int, any, *kongError) {
	var cur *Plugin
	if isUUID(id) {
		if cur = s.st.plugins[strings.ToLower(id)]; cur != nil && !cur.under(parent) {
			cur = nil
		}
	}
	switch method {
	case http.MethodGet:
		if cur == nil {
			return 0, nil, notFound()
		}
		return http.StatusOK, cur.entity(), nil
	case http.MethodDelete:
		if cur != nil {
			s.st.removePlugin(cur.ID)
		}
		return http.StatusNoContent, nil, nil
	case http.MethodPut:
		if !isUUID(id) {
			return 0, nil, schemaViolation(map[string]string{"id": "expected a valid UUID"}, "")
		}
		p, kerr := s.buildPlugin(s.st, doc, strings.ToLower(id), parent)
		if kerr != nil {
			return 0, nil, kerr
		}
		return s.store(p, cur, http.StatusOK)
	case http.MethodPatch:
		if cur == nil {
			return 0, nil, notFound()
		}
		p, kerr := s.buildPlugin(s.st, mergePatch(cur.writableForm(), doc), cur.ID, parent)
		if kerr != nil {
			return 0, nil, kerr
		}
		return s.store(p, cur, http.StatusOK)
	}
	return s.unimplemented(method, "plugin")
}

// store saves p (replacing prev, if any) once it breaks no uniqueness rule.
func (s *Server) store(p, prev *Plugin, status int) (int, any, *kongError) {
	if kerr := s.st.conflict(p); kerr != nil {
		return 0, nil, kerr
	}
	p.CreatedAt, p.UpdatedAt = now(), now()
	if prev != nil {
		p.CreatedAt = prev.CreatedAt
	}
	s.st.putPlugin(p)
	return status, p.entity(), nil
}

func (s *Server) unimplemented(method, what string) (int, any, *kongError) {
	s.tb.Errorf("kongfake: %s on a %s is in Kong's description but the fake does not implement it", method, what)
	return 0, nil, &kongError{status: http.StatusNotImplemented, msg: "kongfake: not implemented"}
}
