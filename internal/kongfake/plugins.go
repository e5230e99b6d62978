package kongfake

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// DefaultPlugins are the plugin names the fake's Kong has enabled unless Options.Plugins says
// otherwise: the two the Kong sync manages, blockwire's own, and a few common bundled ones that
// tests use as user-owned plugins.
func DefaultPlugins() []string {
	return []string{
		"ip-restriction", "request-termination", "noname-prevention",
		"key-auth", "basic-auth", "jwt", "acl", "rate-limiting", "cors", "correlation-id",
	}
}

// defaultProtocols is Kong's default for a plugin's protocols.
func defaultProtocols() []string { return []string{"grpc", "grpcs", "http", "https"} }

func knownProtocols() []string {
	return []string{"grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss"}
}

// configField is one field of a plugin's config schema.
type configField struct {
	def   any
	check func(v any) string // "" when v (never nil) is valid
}

// pluginSchema is what the fake knows of a plugin's config; nil fields accept any object.
type pluginSchema struct {
	fields map[string]configField
	entity func(cfg map[string]any) string // an entity check across fields; "" when valid
}

// pluginSchemas models the configs of the two plugins the Kong sync writes, after Kong 3.9's
// kong/plugins/ip-restriction/schema.lua and request-termination/schema.lua.
func pluginSchemas() map[string]pluginSchema {
	return map[string]pluginSchema{
		"ip-restriction": {
			fields: map[string]configField{
				"allow":   {check: ipList},
				"deny":    {check: ipList},
				"status":  {check: number},
				"message": {check: str},
			},
			entity: func(cfg map[string]any) string {
				if nonEmpty(cfg["allow"]) || nonEmpty(cfg["deny"]) {
					return ""
				}
				return "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
			},
		},
		"request-termination": {
			fields: map[string]configField{
				"status_code":  {def: float64(503), check: intBetween(100, 599)},
				"message":      {check: str},
				"content_type": {check: str},
				"body":         {check: str},
				"echo":         {def: false, check: boolean},
				"trigger":      {check: str},
			},
			entity: func(cfg map[string]any) string {
				if cfg["message"] != nil && (cfg["body"] != nil || cfg["content_type"] != nil) {
					return "message cannot be used with content_type or body"
				}
				if cfg["content_type"] != nil && cfg["body"] == nil {
					return "content_type requires a body"
				}
				return ""
			},
		},
	}
}

func nonEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case []any:
		return len(v) > 0
	case string:
		return v != ""
	}
	return true
}

func ipList(v any) string {
	list, ok := v.([]any)
	if !ok {
		return "expected an array"
	}
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return "expected a string"
		}
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		if _, err := netip.ParsePrefix(s); err == nil {
			continue
		}
		return fmt.Sprintf("invalid ip or cidr range: '%s'", s)
	}
	return ""
}

func number(v any) string {
	if _, ok := v.(float64); !ok {
		return "expected a number"
	}
	return ""
}

func intBetween(lo, hi float64) func(any) string {
	return func(v any) string {
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return "expected an integer"
		}
		if f < lo || f > hi {
			return fmt.Sprintf("value should be between %g and %g", lo, hi)
		}
		return ""
	}
}

func str(v any) string {
	if s, ok := v.(string); !ok || s == "" {
		return "expected a non-empty string"
	}
	return ""
}

func boolean(v any) string {
	if _, ok := v.(bool); !ok {
		return "expected a boolean"
	}
	return ""
}

// utf8Name is Kong's typedefs.utf8_name, used by instance_name.
var utf8Name = regexp.MustCompile(`^[\p{L}\p{N}._~-]+$`)

// parentRef is the scope a nested path (/services/{s}/plugins) imposes.
type parentRef struct {
	field string // "service", "route" or "consumer"
	id    string
}

// buildPlugin applies Kong's rules to a plugin body. id is the plugin's id (from the path for PUT
// and PATCH, "" to generate one for POST); parent is the nested path's scope, if any. The result
// has Kong's defaults filled in; timestamps are left to the caller.
func (s *Server) buildPlugin(st *state, body map[string]any, id string, parent *parentRef) (*Plugin, *kongError) {
	errs := map[string]string{}
	for _, f := range s.spec.unknownFields("Plugin", body) {
		errs[f] = "unknown field"
	}
	p := &Plugin{ID: id, Enabled: true, Protocols: defaultProtocols()}

	switch v := body["id"].(type) {
	case nil:
	case string:
		switch {
		case !isUUID(v):
			errs["id"] = "expected a valid UUID"
		case id != "" && !strings.EqualFold(v, id):
			errs["id"] = "must match the id in the path"
		default:
			p.ID = strings.ToLower(v)
		}
	default:
		errs["id"] = "expected a string"
	}

	switch v := body["name"].(type) {
	case nil:
		errs["name"] = "required field missing"
	case string:
		if !slices.Contains(s.opts.Plugins, v) {
			errs["name"] = fmt.Sprintf("plugin '%s' not enabled; add it to the 'plugins' configuration property", v)
		}
		p.Name = v
	default:
		errs["name"] = "expected a string"
	}

	switch v := body["instance_name"].(type) {
	case nil:
	case string:
		if !utf8Name.MatchString(v) {
			errs["instance_name"] = "invalid value '" + v + "': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
		}
		p.InstanceName = v
	default:
		errs["instance_name"] = "expected a string"
	}

	var fk *kongError
	for _, ref := range []struct {
		field, entity string
		target        *string
		resolve       func(string) string
	}{
		{"service", "services", &p.Service, func(k string) string { return idOf(st.service(k)) }},
		{"route", "routes", &p.Route, func(k string) string { return idOf(st.route(k)) }},
		{"consumer", "consumers", &p.Consumer, func(k string) string { return idOf(st.consumer(k)) }},
	} {
		if parent != nil && parent.field == ref.field {
			*ref.target = parent.id // a nested path sets the scope, whatever the body says
			continue
		}
		key, msg := foreignKey(body[ref.field], ref.field)
		if msg != "" {
			errs[ref.field] = msg
			continue
		}
		if key == "" {
			continue
		}
		if *ref.target = ref.resolve(key); *ref.target == "" && fk == nil {
			fk = foreignKeyViolation(ref.field, ref.entity, key)
		}
	}

	switch v := body["enabled"].(type) {
	case nil:
	case bool:
		p.Enabled = v
	default:
		errs["enabled"] = "expected a boolean"
	}

	if v, ok := body["protocols"]; ok && v != nil {
		list, msg := stringList(v)
		for _, proto := range list {
			if !slices.Contains(knownProtocols(), proto) {
				msg = "expected one of: " + strings.Join(knownProtocols(), ", ")
			}
		}
		if msg == "" && len(list) == 0 {
			msg = "length must be at least 1"
		}
		if msg != "" {
			errs["protocols"] = msg
		}
		p.Protocols = list
	}

	if v, ok := body["tags"]; ok && v != nil {
		list, msg := stringList(v)
		for _, t := range list {
			if t == "" || strings.ContainsAny(t, ",/") || strings.TrimSpace(t) != t {
				msg = "invalid tag '" + t + "': expected printable characters, excluding ',' and '/'"
			}
		}
		if msg != "" {
			errs["tags"] = msg
		}
		p.Tags = list
	}

	for _, f := range []string{"created_at", "updated_at"} {
		if v, ok := body[f]; ok && v != nil {
			if _, isNum := v.(float64); !isNum {
				errs[f] = "expected an integer"
			}
		}
	}

	var entityErr string
	if _, named := errs["name"]; !named {
		cfg, cfgErrs, eErr := s.buildConfig(p.Name, body["config"])
		p.Config, entityErr = cfg, eErr
		for k, v := range cfgErrs {
			errs[k] = v
		}
	}
	if len(errs) > 0 || entityErr != "" {
		return nil, schemaViolation(errs, entityErr)
	}
	if fk != nil {
		return nil, fk
	}
	return p, nil
}

func idOf[T interface{ *Service | *Route | *Consumer }](e T) string {
	switch e := any(e).(type) {
	case *Service:
		if e != nil {
			return e.ID
		}
	case *Route:
		if e != nil {
			return e.ID
		}
	case *Consumer:
		if e != nil {
			return e.ID
		}
	}
	return ""
}

// foreignKey reads a reference: null, {"id": …}, or {"name": …} ({"username": …} for consumers),
// as Kong's JSON API accepts them.
func foreignKey(v any, field string) (string, string) {
	switch v := v.(type) {
	case nil:
		return "", ""
	case map[string]any:
		endpointKey := "name"
		if field == "consumer" {
			endpointKey = "username"
		}
		if len(v) != 1 {
			return "", "expected an object with exactly one of 'id' or '" + endpointKey + "'"
		}
		for k, x := range v {
			s, ok := x.(string)
			if (k != "id" && k != endpointKey) || !ok || s == "" {
				return "", "expected an object with exactly one of 'id' or '" + endpointKey + "'"
			}
			if k == "id" && !isUUID(s) {
				return "", "expected a valid UUID"
			}
			return s, ""
		}
	}
	return "", "expected a record"
}

func stringList(v any) ([]string, string) {
	list, ok := v.([]any)
	if !ok {
		return nil, "expected an array"
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, "expected a string"
		}
		out = append(out, s)
	}
	return out, ""
}

// buildConfig checks a plugin's config against its schema and fills Kong's defaults. Errors are
// keyed "config.<field>".
func (s *Server) buildConfig(name string, raw any) (map[string]any, map[string]string, string) {
	errs := map[string]string{}
	cfg, ok := raw.(map[string]any)
	switch {
	case raw == nil:
		cfg = map[string]any{}
	case !ok:
		errs["config"] = "expected a record"
		return nil, errs, ""
	}
	sch, modelled := s.schemas[name]
	if !modelled {
		return cloneValue(cfg).(map[string]any), errs, ""
	}
	out := make(map[string]any, len(sch.fields))
	for k, v := range cfg {
		f, known := sch.fields[k]
		if !known {
			errs["config."+k] = "unknown field"
			continue
		}
		if v == nil {
			continue
		}
		if msg := f.check(v); msg != "" {
			errs["config."+k] = msg
			continue
		}
		out[k] = cloneValue(v)
	}
	for k, f := range sch.fields {
		if _, set := out[k]; !set {
			out[k] = f.def
		}
	}
	if len(errs) > 0 {
		return nil, errs, ""
	}
	return out, errs, sch.entity(out)
}

// mergePatch applies a PATCH body to a plugin's current form: fields given replace the current
// ones, except config, whose fields are merged one by one. Arrays are replaced whole, as Kong does.
func mergePatch(cur map[string]any, patch map[string]any) map[string]any {
	out := cloneValue(cur).(map[string]any)
	for k, v := range patch {
		if k == "config" {
			if pc, ok := v.(map[string]any); ok {
				cc, _ := out["config"].(map[string]any)
				if cc == nil {
					cc = map[string]any{}
				}
				for ck, cv := range pc {
					cc[ck] = cloneValue(cv)
				}
				out["config"] = cc
				continue
			}
		}
		out[k] = cloneValue(v)
	}
	return out
}

// writableForm is a stored plugin as a body that buildPlugin accepts again (for PATCH).
func (p *Plugin) writableForm() map[string]any {
	e, _ := normalize(p.entity()) // []string to []any, as a decoded body has them
	delete(e, "created_at")
	delete(e, "updated_at")
	// Defaults that Kong filled (nulls) are dropped so that they stay defaults.
	cfg, _ := e["config"].(map[string]any)
	for k, v := range cfg {
		if v == nil {
			delete(cfg, k)
		}
	}
	return e
}
