package kongdriver

import (
	"fmt"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// client answers kong.client.*.
func (s *callState) client(fn string, arg []byte) (proto.Message, error) {
	r := s.req
	switch fn {
	case "get_ip":
		return str(r.ClientIP), nil
	case "get_forwarded_ip":
		if r.ForwardedIP != "" {
			return str(r.ForwardedIP), nil
		}
		return str(r.ClientIP), nil
	case "get_port", "get_forwarded_port":
		return &pb.Int{V: int32(r.ClientPort)}, nil
	case "get_protocol":
		return str(s.scheme()), nil
	case "get_consumer":
		return consumerMsg(r.Consumer), nil
	case "load_consumer":
		var spec pb.ConsumerSpec
		if err := proto.Unmarshal(arg, &spec); err != nil {
			return nil, fmt.Errorf("decode ConsumerSpec: %w", err)
		}
		// Only the request's own consumer exists in this stand-in's database.
		if c := r.Consumer; c != nil && (c.ID == spec.Id || spec.ByUsername && c.Username == spec.Id) {
			return consumerMsg(c), nil
		}
		return nil, nil
	case "get_credential":
		if r.Credential == nil {
			return nil, nil
		}
		return &pb.AuthenticatedCredential{Id: r.Credential.ID, ConsumerId: r.Credential.ConsumerID}, nil
	case "authenticate":
		var a pb.AuthenticateArgs
		if err := proto.Unmarshal(arg, &a); err != nil {
			return nil, fmt.Errorf("decode AuthenticateArgs: %w", err)
		}
		if c := a.Consumer; c != nil {
			r.Consumer = &Consumer{ID: c.Id, Username: c.Username, CustomID: c.CustomId, Tags: c.Tags}
		}
		if c := a.Credential; c != nil {
			r.Credential = &Credential{ID: c.Id, ConsumerID: c.ConsumerId}
		}
		return nil, nil
	}
	return nil, errUnknown
}

func consumerMsg(c *Consumer) proto.Message {
	if c == nil {
		return nil // Kong's get_consumer returns nil: an empty frame, a zero Consumer in go-pdk
	}
	return &pb.Consumer{Id: c.ID, Username: c.Username, CustomId: c.CustomID, Tags: c.Tags}
}

func (s *callState) scheme() string {
	if s.req.Scheme == "" {
		return "http"
	}
	return s.req.Scheme
}

func (s *callState) path() string {
	if s.req.Path == "" {
		return "/"
	}
	return s.req.Path
}

func (s *callState) port() int {
	switch {
	case s.req.Port != 0:
		return s.req.Port
	case s.scheme() == "https":
		return 443
	}
	return 80
}

// request answers kong.request.*; the forwarded_* variants equal the plain ones, as in Kong when
// the peer is not a trusted proxy.
func (s *callState) request(fn string, arg []byte) (proto.Message, error) {
	r := s.req
	switch fn {
	case "get_scheme", "get_forwarded_scheme":
		return str(s.scheme()), nil
	case "get_host", "get_forwarded_host":
		return str(r.Host), nil
	case "get_port", "get_forwarded_port":
		return &pb.Int{V: int32(s.port())}, nil
	case "get_http_version":
		return &pb.Number{V: 1.1}, nil
	case "get_method":
		if r.Method == "" {
			return str("GET"), nil
		}
		return str(r.Method), nil
	case "get_path":
		return str(s.path()), nil
	case "get_path_with_query":
		if r.RawQuery == "" {
			return str(s.path()), nil
		}
		return str(s.path() + "?" + r.RawQuery), nil
	case "get_raw_query":
		return str(r.RawQuery), nil
	case "get_query_arg":
		name, err := argString(arg)
		if err != nil {
			return nil, err
		}
		return s.queryArg(name), nil
	case "get_query":
		max, err := argMax(arg, "max_args")
		if err != nil {
			return nil, err
		}
		return s.queryStruct(max)
	case "get_header":
		name, err := argString(arg)
		if err != nil {
			return nil, err
		}
		return s.header(name), nil
	case "get_headers":
		max, err := argMax(arg, "max_headers")
		if err != nil {
			return nil, err
		}
		return s.headerStruct(max)
	case "get_raw_body":
		return &pb.RawBodyResult{Kind: &pb.RawBodyResult_Content{Content: r.Body}}, nil
	case "get_uri_captures":
		return &pb.UriCapturesResult{}, nil
	}
	return nil, errUnknown
}

// header is Kong's get_header: the first value of the first 100 header lines with that name, or
// nil (an empty frame; go-pdk's GetHeader then returns "" and no error).
func (s *callState) header(name string) proto.Message {
	n := normHeader(name)
	for i, l := range s.lines {
		if i == defaultMax {
			break
		}
		if l.name == n {
			return str(l.value)
		}
	}
	return nil
}

// headerStruct is Kong's get_headers(max): only the first max header lines count.
func (s *callState) headerStruct(max int) (proto.Message, error) {
	var names []string
	values := map[string][]any{}
	for i, l := range s.lines {
		if i == max {
			break
		}
		if _, seen := values[l.name]; !seen {
			names = append(names, l.name)
		}
		values[l.name] = append(values[l.name], l.value)
	}
	return multiStruct(names, values)
}

// queryArg is Kong's get_query_arg: the first value among the first 100 arguments. For a bare
// "?name" Kong's value is true, which does not fit the String reply; "" stands in for it.
func (s *callState) queryArg(name string) proto.Message {
	for i, a := range s.query {
		if i == defaultMax {
			break
		}
		if a.name == name {
			if a.flag {
				return str("")
			}
			return str(a.value)
		}
	}
	return nil
}

func (s *callState) queryStruct(max int) (proto.Message, error) {
	var names []string
	values := map[string][]any{}
	for i, a := range s.query {
		if i == max {
			break
		}
		if _, seen := values[a.name]; !seen {
			names = append(names, a.name)
		}
		var v any = a.value
		if a.flag {
			v = true
		}
		values[a.name] = append(values[a.name], v)
	}
	return multiStruct(names, values)
}
