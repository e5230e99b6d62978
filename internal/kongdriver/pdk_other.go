package kongdriver

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// router answers kong.router.*; nil entities become empty frames, as in Kong.
func (s *callState) router(fn string) (proto.Message, error) {
	switch fn {
	case "get_service":
		v := s.req.Service
		if v == nil {
			return nil, nil
		}
		return &pb.Service{Id: v.ID, Name: v.Name, Host: v.Host, Port: int32(v.Port),
			Protocol: v.Protocol, Path: v.Path, Tags: v.Tags}, nil
	case "get_route":
		v := s.req.Route
		if v == nil {
			return nil, nil
		}
		m := &pb.Route{Id: v.ID, Name: v.Name, Paths: v.Paths, Hosts: v.Hosts, Methods: v.Methods,
			Protocols: v.Protocols, Tags: v.Tags}
		if s.req.Service != nil {
			m.Service = &pb.ServiceKey{Id: s.req.Service.ID}
		}
		return m, nil
	}
	return nil, errUnknown
}

// ctxShared answers kong.ctx.shared.set/get with a per-request table.
func (s *callState) ctxShared(fn string, arg []byte) (proto.Message, error) {
	switch fn {
	case "shared.set":
		k, v, err := argKV(arg)
		if err != nil {
			return nil, err
		}
		if s.shared == nil {
			s.shared = map[string]*structpb.Value{}
		}
		s.shared[k] = v
		return nil, nil
	case "shared.get":
		k, err := argString(arg)
		if err != nil {
			return nil, err
		}
		return valueOrNull(s.shared[k]), nil
	}
	return nil, errUnknown
}

func valueOrNull(v *structpb.Value) proto.Message {
	if v == nil {
		return structpb.NewNullValue()
	}
	return v
}

// log answers kong.log.<level> by recording the message; Kong concatenates the arguments.
func (s *callState) log(fn string, arg []byte) (proto.Message, error) {
	switch fn {
	case "alert", "crit", "err", "warn", "notice", "info", "debug":
		var l structpb.ListValue
		if err := proto.Unmarshal(arg, &l); err != nil {
			return nil, fmt.Errorf("decode ListValue: %w", err)
		}
		var b strings.Builder
		for _, v := range l.Values {
			b.WriteString(luaString(v.AsInterface()))
		}
		s.res.Logs = append(s.res.Logs, fn+": "+b.String())
		return nil, nil
	case "set_serialize_value":
		return nil, nil
	case "serialize":
		out, err := json.Marshal(map[string]any{
			"client_ip": s.req.ClientIP,
			"request":   map[string]any{"method": s.req.Method, "uri": s.path(), "headers": s.req.Headers},
		})
		if err != nil {
			return nil, err
		}
		return str(string(out)), nil
	}
	return nil, errUnknown
}

// luaString formats a log argument roughly as Lua's tostring would.
func luaString(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// nginx answers kong.nginx.*.
func (s *callState) nginx(fn string, arg []byte) (proto.Message, error) {
	switch fn {
	case "get_var":
		name, err := argString(arg)
		if err != nil {
			return nil, err
		}
		return optStr(s.ngxVar(name)), nil
	case "get_tls1_version_str":
		if s.scheme() == "https" {
			return str("TLSv1.3"), nil
		}
		return nil, nil
	case "set_ctx":
		k, v, err := argKV(arg)
		if err != nil {
			return nil, err
		}
		if s.ngxCtx == nil {
			s.ngxCtx = map[string]*structpb.Value{}
		}
		s.ngxCtx[k] = v
		return nil, nil
	case "get_ctx":
		k, err := argString(arg)
		if err != nil {
			return nil, err
		}
		return valueOrNull(s.ngxCtx[k]), nil
	case "req_start_time":
		return &pb.Number{V: float64(s.start.UnixMicro()) / 1e6}, nil
	case "get_subsystem":
		return str("http"), nil
	}
	return nil, errUnknown
}

// ngxVar resolves the nginx variables a plugin is likely to read; unknown ones are nil.
func (s *callState) ngxVar(name string) string {
	r := s.req
	if v, ok := r.Vars[name]; ok {
		return v
	}
	if h, ok := strings.CutPrefix(name, "http_"); ok {
		if m, ok := s.header(h).(*pb.String); ok {
			return m.V
		}
		return ""
	}
	switch name {
	case "remote_addr", "realip_remote_addr":
		return r.ClientIP
	case "remote_port":
		return strconv.Itoa(r.ClientPort)
	case "request_method":
		if r.Method == "" {
			return "GET"
		}
		return r.Method
	case "scheme":
		return s.scheme()
	case "host", "server_name":
		return r.Host
	case "server_port":
		return strconv.Itoa(s.port())
	case "uri":
		return s.path()
	case "args", "query_string":
		return r.RawQuery
	case "request_uri":
		if r.RawQuery == "" {
			return s.path()
		}
		return s.path() + "?" + r.RawQuery
	}
	return ""
}

// service answers kong.service.* setters; they only change the upstream request, which the
// driver does not model, so they are acknowledged and listed in Result.Calls.
func (s *callState) service(fn string) (proto.Message, error) {
	switch fn {
	case "set_upstream":
		return &pb.Bool{V: true}, nil
	case "set_target":
		return nil, nil
	}
	if strings.HasPrefix(fn, "request.set_") || strings.HasPrefix(fn, "request.add_") ||
		strings.HasPrefix(fn, "request.clear_") {
		return nil, nil
	}
	return nil, errUnknown
}

func (s *callState) node(fn string) (proto.Message, error) {
	switch fn {
	case "get_id":
		return str(s.d.nodeID), nil
	case "get_memory_stats":
		return &pb.MemoryStats{}, nil
	}
	return nil, errUnknown
}

// ip answers kong.ip.is_trusted: Kong's default trusted_ips is empty.
func (s *callState) ip(fn string) (proto.Message, error) {
	if fn == "is_trusted" {
		return &pb.Bool{V: false}, nil
	}
	return nil, errUnknown
}
