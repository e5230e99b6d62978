package kongdriver

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Kong's limits for kong.request.get_headers / get_query (and get_header's search).
const (
	defaultMax = 100
	maxMax     = 1000
)

type headerLine struct{ name, value string }

type queryArg struct {
	name  string
	value string
	flag  bool // "?name" without "=": Kong's value is true, not a string
}

// callState is one request as Kong holds it while the plugin's event runs.
type callState struct {
	d      *Driver
	req    *Request
	lines  []headerLine
	query  []queryArg
	shared map[string]*structpb.Value // kong.ctx.shared
	ngxCtx map[string]*structpb.Value // ngx.ctx via kong.nginx.set_ctx/get_ctx
	start  time.Time
	res    Result
}

func newCallState(d *Driver, req *Request) *callState {
	return &callState{
		d:     d,
		req:   req,
		lines: headerLines(req),
		query: parseQuery(req.RawQuery),
		start: time.Now(),
		res:   Result{Calls: make([]string, 0, 8)},
	}
}

// headerLines orders the request's headers (see Request.Headers) and merges names that differ
// only in case, as HTTP does.
func headerLines(req *Request) []headerLine {
	keys := make([]string, 0, len(req.Headers))
	for k := range req.Headers {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := strings.ToLower(keys[i]), strings.ToLower(keys[j])
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	lines := make([]headerLine, 0, len(keys)+1)
	hasHost := false
	for _, k := range keys {
		name := strings.ToLower(k)
		hasHost = hasHost || name == "host"
		for _, v := range req.Headers[k] {
			lines = append(lines, headerLine{name, v})
		}
	}
	if !hasHost && req.Host != "" {
		// Host comes first in practically every real request.
		lines = append([]headerLine{{"host", req.Host}}, lines...)
	}
	return lines
}

// normHeader makes a lookup name comparable with headerLine.name: Kong matches header names
// case-insensitively and lets "_" stand for "-".
func normHeader(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// parseQuery splits the raw query as ngx.decode_args does: "&"-separated, "+" and %XX decoded,
// a malformed escape left as it is.
func parseQuery(raw string) []queryArg {
	var args []queryArg
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		name, value, hasValue := strings.Cut(part, "=")
		args = append(args, queryArg{name: unescape(name), value: unescape(value), flag: !hasValue})
	}
	return args
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// answer computes the reply frame for one PDK call. A nil message becomes an empty frame, which
// is what Kong sends when the PDK function returns nil (go-pdk then decodes zero values).
func (s *callState) answer(method string, arg []byte) ([]byte, error) {
	var (
		msg proto.Message
		err error
	)
	module, fn, _ := strings.Cut(strings.TrimPrefix(method, "kong."), ".")
	switch module {
	case "client":
		msg, err = s.client(fn, arg)
	case "request":
		msg, err = s.request(fn, arg)
	case "router":
		msg, err = s.router(fn)
	case "ctx":
		msg, err = s.ctxShared(fn, arg)
	case "log":
		msg, err = s.log(fn, arg)
	case "nginx":
		msg, err = s.nginx(fn, arg)
	case "response":
		msg, err = s.response(fn, arg)
	case "service":
		msg, err = s.service(fn)
	case "node":
		msg, err = s.node(fn)
	case "ip":
		msg, err = s.ip(fn)
	default:
		err = errUnknown
	}
	if errors.Is(err, errUnknown) {
		return nil, fmt.Errorf("kongdriver: %w: %s", ErrUnknownMethod, method)
	}
	if err != nil {
		return nil, fmt.Errorf("kongdriver: PDK call %s: %w", method, err)
	}
	if msg == nil {
		return []byte{}, nil
	}
	out, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("kongdriver: encode reply to %s: %w", method, err)
	}
	return out, nil
}

// errUnknown is the module handlers' internal "not mine"; answer turns it into ErrUnknownMethod.
var errUnknown = errors.New("unknown PDK method")

func str(s string) proto.Message { return &pb.String{V: s} }

// optStr answers nil (an empty frame) for "", as Kong does for a missing value.
func optStr(s string) proto.Message {
	if s == "" {
		return nil
	}
	return &pb.String{V: s}
}

func argString(arg []byte) (string, error) {
	var v pb.String
	if err := proto.Unmarshal(arg, &v); err != nil {
		return "", fmt.Errorf("decode String argument: %w", err)
	}
	return v.V, nil
}

// argMax decodes the Int limit of get_headers/get_query with Kong's rules: 0 is absent on the
// wire, so Kong sees nil and uses 100; below 1 or above 1000 Kong raises an error.
func argMax(arg []byte, what string) (int, error) {
	var v pb.Int
	if err := proto.Unmarshal(arg, &v); err != nil {
		return 0, fmt.Errorf("decode Int argument: %w", err)
	}
	switch {
	case v.V == 0:
		return defaultMax, nil
	case v.V < 1:
		return 0, fmt.Errorf("%s must be >= 1", what)
	case v.V > maxMax:
		return 0, fmt.Errorf("%s must be <= %d", what, maxMax)
	}
	return int(v.V), nil
}

func argKV(arg []byte) (string, *structpb.Value, error) {
	var kv pb.KV
	if err := proto.Unmarshal(arg, &kv); err != nil {
		return "", nil, fmt.Errorf("decode KV argument: %w", err)
	}
	v := kv.V
	if v == nil {
		v = structpb.NewNullValue()
	}
	return kv.K, v, nil
}

// multiStruct encodes name → values as Kong's tables do: a string for one value, a list for more.
func multiStruct(names []string, values map[string][]any) (*structpb.Struct, error) {
	fields := make(map[string]*structpb.Value, len(names))
	for _, n := range names {
		vs := values[n]
		if len(vs) == 1 {
			v, err := structpb.NewValue(vs[0])
			if err != nil {
				return nil, err
			}
			fields[n] = v
			continue
		}
		l, err := structpb.NewList(vs)
		if err != nil {
			return nil, err
		}
		fields[n] = structpb.NewListValue(l)
	}
	return &structpb.Struct{Fields: fields}, nil
}
