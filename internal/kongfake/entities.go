package kongfake

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Services, routes and consumers: enough of Kong's behaviour for tests to create the scopes that
// plugins name, over HTTP or from Go.

func sortedBy[T any](m map[string]T, id func(T) string) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	return out
}

func (s *Server) listServices(r *http.Request) (int, any, *kongError) {
	lq, kerr := parseListQuery(r.URL.Query())
	if kerr != nil {
		return 0, nil, kerr
	}
	items := sortedBy(s.st.services, func(v *Service) string { return v.ID })
	pg := paginate(items, func(v *Service) string { return v.ID }, func(v *Service) []string { return v.Tags },
		(*Service).entity, lq)
	return http.StatusOK, pg.answer(r.URL.Path, lq), nil
}

func (s *Server) createService(doc map[string]any) (int, any, *kongError) {
	errs := map[string]string{}
	for _, f := range s.spec.unknownFields("Service", doc) {
		errs[f] = "unknown field"
	}
	svc := &Service{ID: uuid.NewString(), Protocol: "http", Port: 80, CreatedAt: now()}
	svc.Name, _ = doc["name"].(string)
	svc.Host, _ = doc["host"].(string)
	svc.Path, _ = doc["path"].(string)
	if p, ok := doc["protocol"].(string); ok {
		svc.Protocol = p
	}
	if p, ok := doc["port"].(float64); ok {
		svc.Port = int(p)
	}
	if raw, ok := doc["url"].(string); ok {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			errs["url"] = "missing host in url"
		} else {
			svc.Protocol, svc.Host, svc.Path = u.Scheme, u.Hostname(), u.Path
			svc.Port = 80
			if u.Scheme == "https" {
				svc.Port = 443
			}
			if p, err := strconv.Atoi(u.Port()); err == nil {
				svc.Port = p
			}
		}
	}
	if svc.Host == "" && errs["url"] == "" {
		errs["host"] = "required field missing"
	}
	if t, ok := doc["tags"]; ok && t != nil {
		var msg string
		if svc.Tags, msg = stringList(t); msg != "" {
			errs["tags"] = msg
		}
	}
	if len(errs) > 0 {
		return 0, nil, schemaViolation(errs, "")
	}
	if svc.Name != "" && s.st.service(svc.Name) != nil {
		return 0, nil, uniqueViolation(`{name="` + svc.Name + `"}`)
	}
	s.st.addService(svc)
	return http.StatusCreated, svc.entity(), nil
}

func (s *Server) deleteService(svc *Service) (int, any, *kongError) {
	if svc == nil {
		return http.StatusNoContent, nil, nil
	}
	for _, rt := range s.st.routes {
		if rt.Service == svc.ID {
			return 0, nil, &kongError{status: http.StatusBadRequest, code: codeReferencedByOthers,
				name: "foreign keys violation", msg: "an existing 'routes' entity references this 'services' entity"}
		}
	}
	s.st.removeService(svc.ID)
	return http.StatusNoContent, nil, nil
}

func (s *Server) listRoutes(r *http.Request, svc *Service) (int, any, *kongError) {
	lq, kerr := parseListQuery(r.URL.Query())
	if kerr != nil {
		return 0, nil, kerr
	}
	var items []*Route
	for _, rt := range sortedBy(s.st.routes, func(v *Route) string { return v.ID }) {
		if svc == nil || rt.Service == svc.ID {
			items = append(items, rt)
		}
	}
	pg := paginate(items, func(v *Route) string { return v.ID }, func(v *Route) []string { return v.Tags },
		(*Route).entity, lq)
	return http.StatusOK, pg.answer(r.URL.Path, lq), nil
}

func (s *Server) createRoute(doc map[string]any, svc *Service) (int, any, *kongError) {
	errs := map[string]string{}
	for _, f := range s.spec.unknownFields("Route", doc) {
		errs[f] = "unknown field"
	}
	rt := &Route{ID: uuid.NewString(), Protocols: []string{"http", "https"}, CreatedAt: now()}
	rt.Name, _ = doc["name"].(string)
	for _, f := range []struct {
		name string
		dst  *[]string
	}{{"paths", &rt.Paths}, {"hosts", &rt.Hosts}, {"methods", &rt.Methods}, {"protocols", &rt.Protocols}, {"tags", &rt.Tags}} {
		if v, ok := doc[f.name]; ok && v != nil {
			list, msg := stringList(v)
			if msg != "" {
				errs[f.name] = msg
				continue
			}
			*f.dst = list
		}
	}
	if len(rt.Paths)+len(rt.Hosts)+len(rt.Methods) == 0 {
		errs["@entity"] = "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
	}
	var fk *kongError
	if svc != nil {
		rt.Service = svc.ID
	} else {
		key, msg := foreignKey(doc["service"], "service")
		if msg != "" {
			errs["service"] = msg
		} else if key != "" {
			if rt.Service = idOf(s.st.service(key)); rt.Service == "" {
				fk = foreignKeyViolation("service", "services", key)
			}
		}
	}
	if entityErr := errs["@entity"]; len(errs) > 0 {
		delete(errs, "@entity")
		return 0, nil, schemaViolation(errs, entityErr)
	}
	if fk != nil {
		return 0, nil, fk
	}
	if rt.Name != "" && s.st.route(rt.Name) != nil {
		return 0, nil, uniqueViolation(`{name="` + rt.Name + `"}`)
	}
	s.st.addRoute(rt)
	return http.StatusCreated, rt.entity(), nil
}

func (s *Server) listConsumers(r *http.Request) (int, any, *kongError) {
	lq, kerr := parseListQuery(r.URL.Query())
	if kerr != nil {
		return 0, nil, kerr
	}
	items := sortedBy(s.st.consumers, func(v *Consumer) string { return v.ID })
	pg := paginate(items, func(v *Consumer) string { return v.ID }, func(v *Consumer) []string { return v.Tags },
		(*Consumer).entity, lq)
	return http.StatusOK, pg.answer(r.URL.Path, lq), nil
}

func (s *Server) createConsumer(doc map[string]any) (int, any, *kongError) {
	errs := map[string]string{}
	for _, f := range s.spec.unknownFields("Consumer", doc) {
		errs[f] = "unknown field"
	}
	c := &Consumer{ID: uuid.NewString(), CreatedAt: now()}
	c.Username, _ = doc["username"].(string)
	c.CustomID, _ = doc["custom_id"].(string)
	if t, ok := doc["tags"]; ok && t != nil {
		var msg string
		if c.Tags, msg = stringList(t); msg != "" {
			errs["tags"] = msg
		}
	}
	entityErr := ""
	if c.Username == "" && c.CustomID == "" {
		entityErr = "at least one of these fields must be non-empty: 'custom_id', 'username'"
	}
	if len(errs) > 0 || entityErr != "" {
		return 0, nil, schemaViolation(errs, entityErr)
	}
	if c.Username != "" && s.st.consumer(c.Username) != nil {
		return 0, nil, uniqueViolation(`{username="` + c.Username + `"}`)
	}
	s.st.addConsumer(c)
	return http.StatusCreated, c.entity(), nil
}
