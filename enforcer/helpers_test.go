package enforcer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/schemas"
)

// fakeRequest is a request whose answers a test sets; it records the PDK calls made, by the
// names Kong's PDK gives them.
type fakeRequest struct {
	ip        string
	headers   map[string][]string // lower-case names
	query     string
	consumer  [2]string // id, username
	service   [2]string // id, name
	route     [2]string // id, name
	requestID string
	panicOn   string // a call name that panics
	failOn    string // a call name that fails

	calls  []string
	exited bool
	status int
	body   []byte
	hdrs   map[string][]string
}

var _ request = (*fakeRequest)(nil)

func (r *fakeRequest) call(name string) error {
	r.calls = append(r.calls, name)
	if r.panicOn == name {
		panic("test panic in " + name)
	}
	if r.failOn == name {
		return errors.New("connection closed")
	}
	return nil
}

func (r *fakeRequest) ForwardedIP() (string, error) {
	return r.ip, r.call("kong.client.get_forwarded_ip")
}

func (r *fakeRequest) Headers(max int) (map[string][]string, error) {
	if err := r.call("kong.request.get_headers"); err != nil {
		return nil, err
	}
	// Kong's get_headers: only the first max lines, in order (here: by name, as the driver).
	out := map[string][]string{}
	n := 0
	for _, name := range sortedKeys(r.headers) {
		for _, v := range r.headers[name] {
			if n == max {
				return out, nil
			}
			out[name] = append(out[name], v)
			n++
		}
	}
	return out, nil
}

func (r *fakeRequest) RawQuery() (string, error) {
	return r.query, r.call("kong.request.get_raw_query")
}

func (r *fakeRequest) Consumer() (string, string, error) {
	return r.consumer[0], r.consumer[1], r.call("kong.client.get_consumer")
}

func (r *fakeRequest) Service() (string, string, error) {
	return r.service[0], r.service[1], r.call("kong.router.get_service")
}

func (r *fakeRequest) Route() (string, string, error) {
	return r.route[0], r.route[1], r.call("kong.router.get_route")
}

func (r *fakeRequest) Var(name string) (string, error) {
	return r.requestID, r.call("kong.nginx.get_var")
}

func (r *fakeRequest) Exit(status int, body []byte, headers map[string][]string) {
	r.calls = append(r.calls, "kong.response.exit")
	r.exited, r.status, r.body, r.hdrs = true, status, body, headers
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// insertion sort: tests have few headers, except the truncation test, which is fine
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// blk describes a block as the consumer would write it, for tests.
type blk struct {
	kind           schemas.EntityType
	name, value    string // value raw: hashed here for header, cookie, query and whole tokens
	service, route string
	exp            int64 // Unix ms; 0 = an hour from now
}

func (b blk) op() op {
	v := b.value
	switch {
	case b.kind == schemas.EntityHeader || b.kind == schemas.EntityCookie || b.kind == schemas.EntityQuery:
		v = sha(v)
	case b.kind == schemas.EntityJWT && b.name == "":
		v = sha(v)
	}
	exp := b.exp
	if exp == 0 {
		exp = time.Now().Add(time.Hour).UnixMilli()
	}
	return op{parts: schemas.KeyParts{Kind: b.kind, Service: b.service, Route: b.route, Name: b.name, Value: v}, exp: exp}
}

func (b blk) key(t testing.TB) string {
	t.Helper()
	o := b.op()
	k, err := schemas.BlockKey(o.parts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestWriter returns a published writer holding blocks.
func newTestWriter(t testing.TB, blocks ...blk) *writer {
	t.Helper()
	w := newWriter()
	ops := make([]op, len(blocks))
	for i, b := range blocks {
		ops[i] = b.op()
	}
	if err := w.apply(ops, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	w.published()
	return w
}

// testRuntime is a Runtime without NATS: the default location's mirror serves x (nil:
// never synced), so instances with no NATS settings of their own use it.
func testRuntime(t testing.TB, x *index) (*Runtime, *Mirror) {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rt := &Runtime{log: zerolog.Nop(), m: m, reg: prometheus.NewRegistry(), mirrors: map[location]*Mirror{}}
	s, err := rt.env.resolve(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	rt.defLoc = s.loc
	mr := newMirror(mirrorConfig{loc: s.loc, log: zerolog.Nop()})
	if x != nil {
		mr.cur.Store(x)
	}
	rt.mirrors[s.loc] = mr
	return rt, mr
}

// testConfig decodes an instance config as go-pdk does.
func testConfig(t testing.TB, rt *Runtime, config string) *Config {
	t.Helper()
	c := rt.New().(*Config)
	if err := json.Unmarshal([]byte(config), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// jwtToken builds an unsigned compact JWT with the given claims.
func jwtToken(t testing.TB, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims)) + ".c2ln"
}

func callNames(calls []string) string { return strings.Join(calls, ",") }

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
