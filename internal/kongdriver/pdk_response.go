package kongdriver

import (
	"fmt"
	"strings"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// response answers the kong.response setters allowed in the access phase (exit is handled by
// the event loop); getters are header_filter-phase functions and stay unknown.
func (s *callState) response(fn string, arg []byte) (proto.Message, error) {
	switch fn {
	case "set_status":
		var v pb.Int
		if err := proto.Unmarshal(arg, &v); err != nil {
			return nil, fmt.Errorf("decode Int: %w", err)
		}
		s.res.Status = int(v.V)
	case "set_header", "add_header":
		k, v, err := argKV(arg)
		if err != nil {
			return nil, err
		}
		s.setHeader(k, []string{luaString(v.AsInterface())}, fn == "add_header")
	case "clear_header":
		k, err := argString(arg)
		if err != nil {
			return nil, err
		}
		delete(s.res.Headers, strings.ToLower(k))
	case "set_headers":
		var st structpb.Struct
		if err := proto.Unmarshal(arg, &st); err != nil {
			return nil, fmt.Errorf("decode Struct: %w", err)
		}
		for k, vs := range unwrapHeaders(&st) {
			s.setHeader(k, vs, false)
		}
	default:
		return nil, errUnknown
	}
	return nil, nil
}

func (s *callState) setHeader(name string, values []string, add bool) {
	if s.res.Headers == nil {
		s.res.Headers = map[string][]string{}
	}
	name = strings.ToLower(name)
	if add {
		s.res.Headers[name] = append(s.res.Headers[name], values...)
	} else {
		s.res.Headers[name] = append([]string(nil), values...)
	}
}

// exit records kong.response.exit. Kong rejects a status outside 100..599 with an error.
func (s *callState) exit(arg []byte) error {
	var a pb.ExitArgs
	if err := proto.Unmarshal(arg, &a); err != nil {
		return fmt.Errorf("kongdriver: decode ExitArgs: %w", err)
	}
	if a.Status < 100 || a.Status > 599 {
		return fmt.Errorf("kongdriver: kong.response.exit: code must be between 100 and 599, got %d", a.Status)
	}
	s.res.Status = int(a.Status)
	s.res.Body = a.Body
	for k, vs := range unwrapHeaders(a.Headers) {
		s.setHeader(k, vs, false)
	}
	return nil
}

// unwrapHeaders reads a header table: each value a string or a list of strings.
func unwrapHeaders(st *structpb.Struct) map[string][]string {
	out := map[string][]string{}
	for k, v := range st.GetFields() {
		if l := v.GetListValue(); l != nil {
			for _, e := range l.Values {
				out[k] = append(out[k], luaString(e.AsInterface()))
			}
			continue
		}
		out[k] = []string{luaString(v.AsInterface())}
	}
	return out
}
