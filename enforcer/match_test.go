package enforcer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

const (
	callIP       = "kong.client.get_forwarded_ip"
	callHeaders  = "kong.request.get_headers"
	callQuery    = "kong.request.get_raw_query"
	callConsumer = "kong.client.get_consumer"
	callService  = "kong.router.get_service"
	callRoute    = "kong.router.get_route"
	callVar      = "kong.nginx.get_var"
	callExit     = "kong.response.exit"
)

// access runs the handler on req with the index holding blocks, and returns req.
func access(t *testing.T, config string, req *fakeRequest, blocks ...blk) *fakeRequest {
	t.Helper()
	w := newTestWriter(t, blocks...)
	rt, _ := testRuntime(t, w.idx)
	c := testConfig(t, rt, config)
	c.access(req)
	return req
}

func TestMatchEveryKind(t *testing.T) {
	sub := jwtToken(t, `{"sub":"user-1","n":1234567,"esc":"caf\u00e9 \"x\"","nested":{"sub":"user-2"}}`)
	other := jwtToken(t, `{"sub":"user-2"}`)
	tests := []struct {
		name    string
		blocks  []blk
		req     fakeRequest
		blocked bool
		calls   string // PDK calls before the exit (get_var and exit follow a block)
	}{
		{"ip v4", []blk{{kind: "ip", value: "203.0.113.7"}}, fakeRequest{ip: "203.0.113.7"}, true, callIP},
		{"ip v4 other", []blk{{kind: "ip", value: "203.0.113.7"}}, fakeRequest{ip: "203.0.113.8"}, false, callIP},
		{"ip v4-mapped request", []blk{{kind: "ip", value: "203.0.113.7"}}, fakeRequest{ip: "::ffff:203.0.113.7"}, true, callIP},
		{"ip v6", []blk{{kind: "ip", value: "2001:db8::1"}}, fakeRequest{ip: "2001:db8::1"}, true, callIP},
		{"ip v6 zone ignored", []blk{{kind: "ip", value: "fe80::1"}}, fakeRequest{ip: "fe80::1%eth0"}, true, callIP},
		{"ip unparsable", []blk{{kind: "ip", value: "203.0.113.7"}}, fakeRequest{ip: "unknown"}, false, callIP},
		{"cidr", []blk{{kind: "cidr", value: "198.51.100.0/24"}}, fakeRequest{ip: "198.51.100.200"}, true, callIP},
		{"cidr outside", []blk{{kind: "cidr", value: "198.51.100.0/24"}}, fakeRequest{ip: "198.51.101.1"}, false, callIP},
		{"cidr v6", []blk{{kind: "cidr", value: "2001:db8::/32"}}, fakeRequest{ip: "2001:db8:ffff::9"}, true, callIP},
		{"header", []blk{{kind: "header", name: "x-api-key", value: "k-123"}},
			fakeRequest{headers: map[string][]string{"x-api-key": {"k-123"}}}, true, callHeaders},
		{"header second value", []blk{{kind: "header", name: "x-api-key", value: "k-123"}},
			fakeRequest{headers: map[string][]string{"x-api-key": {"fine", "k-123"}}}, true, callHeaders},
		{"header other value", []blk{{kind: "header", name: "x-api-key", value: "k-123"}},
			fakeRequest{headers: map[string][]string{"x-api-key": {"k-124"}}}, false, callHeaders},
		{"header other name", []blk{{kind: "header", name: "x-api-key", value: "k-123"}},
			fakeRequest{headers: map[string][]string{"x-other": {"k-123"}}}, false, callHeaders},
		{"cookie", []blk{{kind: "cookie", name: "session_id", value: "s3cr3t"}},
			fakeRequest{headers: map[string][]string{"cookie": {"a=1; session_id=s3cr3t; b=2"}}}, true, callHeaders},
		{"cookie quoted", []blk{{kind: "cookie", name: "session_id", value: "s3cr3t"}},
			fakeRequest{headers: map[string][]string{"cookie": {`session_id="s3cr3t"`}}}, true, callHeaders},
		{"cookie other name", []blk{{kind: "cookie", name: "session_id", value: "s3cr3t"}},
			fakeRequest{headers: map[string][]string{"cookie": {"sid=s3cr3t"}}}, false, callHeaders},
		{"query", []blk{{kind: "query", name: "token", value: "a b/c"}}, fakeRequest{query: "x=1&token=a+b%2Fc"}, true, callQuery},
		{"query raw form", []blk{{kind: "query", name: "token", value: "a+b"}}, fakeRequest{query: "token=a+b"}, true, callQuery},
		{"query other", []blk{{kind: "query", name: "token", value: "abc"}}, fakeRequest{query: "token=abd&abc"}, false, callQuery},
		{"jwt claim", []blk{{kind: "jwt", name: "sub", value: "user-1"}},
			fakeRequest{headers: map[string][]string{"authorization": {"Bearer " + sub}}}, true, callHeaders},
		{"jwt claim nested not top level", []blk{{kind: "jwt", name: "sub", value: "user-2"}},
			fakeRequest{headers: map[string][]string{"authorization": {"Bearer " + sub}}}, false, callHeaders},
		{"jwt claim escaped", []blk{{kind: "jwt", name: "esc", value: `café "x"`}},
			fakeRequest{headers: map[string][]string{"authorization": {"bearer " + sub}}}, true, callHeaders},
		{"jwt claim number", []blk{{kind: "jwt", name: "n", value: fmt.Sprint(1234567.0)}},
			fakeRequest{headers: map[string][]string{"authorization": {"Bearer " + sub}}}, true, callHeaders},
		{"jwt claim other", []blk{{kind: "jwt", name: "sub", value: "user-1"}},
			fakeRequest{headers: map[string][]string{"authorization": {"Bearer " + other}}}, false, callHeaders},
		{"jwt whole token", []blk{{kind: "jwt", value: other}},
			fakeRequest{headers: map[string][]string{"authorization": {"Bearer " + other}}}, true, callHeaders},
		{"jwt token without scheme", []blk{{kind: "jwt", value: other}},
			fakeRequest{headers: map[string][]string{"authorization": {other}}}, true, callHeaders},
		{"consumer by username", []blk{{kind: "consumer", value: "acme"}}, fakeRequest{consumer: [2]string{"c-1", "acme"}}, true, callConsumer},
		{"consumer by id", []blk{{kind: "consumer", value: "c-1"}}, fakeRequest{consumer: [2]string{"c-1", "acme"}}, true, callConsumer},
		{"consumer anonymous", []blk{{kind: "consumer", value: "acme"}}, fakeRequest{}, false, callConsumer},
		{"no blocks", nil, fakeRequest{ip: "203.0.113.7"}, false, ""},
		{"scoped service by name", []blk{{kind: "ip", value: "203.0.113.7", service: "orders"}},
			fakeRequest{ip: "203.0.113.7", service: [2]string{"s-1", "orders"}}, true, callIP + "," + callService},
		{"scoped service by id", []blk{{kind: "ip", value: "203.0.113.7", service: "s-1"}},
			fakeRequest{ip: "203.0.113.7", service: [2]string{"s-1", "orders"}}, true, callIP + "," + callService},
		{"scoped other service", []blk{{kind: "ip", value: "203.0.113.7", service: "orders"}},
			fakeRequest{ip: "203.0.113.7", service: [2]string{"s-2", "users"}}, false, callIP + "," + callService},
		{"scoped no candidate: no router call", []blk{{kind: "ip", value: "203.0.113.7", service: "orders"}},
			fakeRequest{ip: "203.0.113.8"}, false, callIP},
		{"scoped route", []blk{{kind: "header", name: "x-api-key", value: "k", route: "list"}},
			fakeRequest{headers: map[string][]string{"x-api-key": {"k"}}, route: [2]string{"r-1", "list"}}, true, callHeaders + "," + callRoute},
		{"scoped service and route", []blk{{kind: "consumer", value: "acme", service: "orders", route: "r-1"}},
			fakeRequest{consumer: [2]string{"c", "acme"}, service: [2]string{"s-1", "orders"}, route: [2]string{"r-1", "list"}},
			true, callConsumer + "," + callService + "," + callRoute},
		{"scoped range", []blk{{kind: "cidr", value: "10.0.0.0/8", route: "admin"}},
			fakeRequest{ip: "10.1.2.3", route: [2]string{"r-9", "admin"}}, true, callIP + "," + callRoute},
		{"scoped longest range does not hide a global shorter one", []blk{
			{kind: "cidr", value: "10.0.0.0/8"}, {kind: "cidr", value: "10.1.0.0/16", route: "admin"}},
			fakeRequest{ip: "10.1.2.3", route: [2]string{"r-9", "public"}}, true, callIP},
		{"global and scoped on one key", []blk{{kind: "ip", value: "203.0.113.7"}, {kind: "ip", value: "203.0.113.7", service: "orders"}},
			fakeRequest{ip: "203.0.113.7"}, true, callIP},
		{"every kind, nothing matches", []blk{
			{kind: "ip", value: "203.0.113.7"}, {kind: "header", name: "x-api-key", value: "k"},
			{kind: "cookie", name: "sid", value: "s"}, {kind: "query", name: "q", value: "v"},
			{kind: "jwt", name: "sub", value: "u"}, {kind: "consumer", value: "acme"}},
			fakeRequest{ip: "192.0.2.1"}, false, strings.Join([]string{callIP, callHeaders, callQuery, callConsumer}, ",")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := access(t, `{}`, &tt.req, tt.blocks...)
			if req.exited != tt.blocked {
				t.Fatalf("blocked = %v, want %v (calls %v)", req.exited, tt.blocked, req.calls)
			}
			want := tt.calls
			if tt.blocked {
				want = strings.TrimPrefix(want+","+callVar+","+callExit, ",")
			}
			if got := callNames(req.calls); got != want {
				t.Errorf("calls = %s, want %s", got, want)
			}
			if tt.blocked {
				var body map[string]string
				if err := json.Unmarshal(req.body, &body); err != nil || req.status != 403 ||
					body["reason"] != "blocked" || body["message"] != "Forbidden" || body["request_id"] == "" {
					t.Errorf("exit %d %s (%v), want 403 with a JSON reason and request id", req.status, req.body, err)
				}
			}
		})
	}
}

// Kong's get_headers returns at most 1000 lines, and a copy of a name past them reaches the
// upstream all the same (nginx passes every line; cookies are joined). A truncated request is
// judged on what is visible, then refused if a name an active block needs may have a copy
// past the limit: Kong's get_header shows only the first copy, so no call can see it.
func TestHeaderTruncation(t *testing.T) {
	// many returns maxHeaders-1 filler lines, sorted before the extra ones, plus extra.
	many := func(extra map[string][]string) map[string][]string {
		h := map[string][]string{}
		for i := range maxHeaders - 1 {
			h[fmt.Sprintf("a-%04d", i)] = []string{"x"}
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	tok, other := jwtToken(t, `{"sub":"u"}`), jwtToken(t, `{"sub":"v"}`)
	hidden := map[string][]string{"a-9999": {"x"}} // a thousandth filler: what follows is hidden
	with := func(a, b map[string][]string) map[string][]string {
		out := map[string][]string{}
		for _, m := range []map[string][]string{a, b} {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	cookieBlk := blk{kind: "cookie", name: "sid", value: "s"}
	headerBlk := blk{kind: "header", name: "x-api-key", value: "k"}
	jwtBlk := blk{kind: "jwt", name: "sub", value: "u"}
	for _, tt := range []struct {
		name    string
		headers map[string][]string
		blocks  []blk
		reason  string // "" allowed
	}{
		// The review's bypass: one harmless copy visible, the blocked one past the limit.
		{"cookie: second line past the limit", many(map[string][]string{"cookie": {"a=1", "sid=s"}}), []blk{cookieBlk}, reasonTooManyHeaders},
		{"header: second copy past the limit", many(map[string][]string{"x-api-key": {"fine", "k"}}), []blk{headerBlk}, reasonTooManyHeaders},
		{"header named cookie: second line past the limit", many(map[string][]string{"cookie": {"a=1", "sid=s"}}),
			[]blk{{kind: "header", name: "cookie", value: "sid=s"}}, reasonTooManyHeaders},
		{"header: only copy past the limit", many(with(hidden, map[string][]string{"x-api-key": {"k"}})), []blk{headerBlk}, reasonTooManyHeaders},
		{"cookie: only line past the limit", many(with(hidden, map[string][]string{"cookie": {"sid=s"}})), []blk{cookieBlk}, reasonTooManyHeaders},
		{"cookie: none visible", many(hidden), []blk{cookieBlk}, reasonTooManyHeaders},
		{"authorization past the limit", many(with(hidden, map[string][]string{"authorization": {"Bearer " + tok}})), []blk{jwtBlk}, reasonTooManyHeaders},
		{"header named authorization, none visible", many(hidden), []blk{{kind: "header", name: "authorization", value: "Bearer " + tok}}, reasonTooManyHeaders},
		// What is visible is judged first.
		{"cookie: blocked line visible", many(map[string][]string{"cookie": {"sid=s", "a=1"}}), []blk{cookieBlk}, reasonBlocked},
		{"header: blocked copy visible", many(map[string][]string{"x-api-key": {"k", "fine"}}), []blk{headerBlk}, reasonBlocked},
		{"authorization visible and blocked", many(map[string][]string{"authorization": {"Bearer " + tok}}), []blk{jwtBlk}, reasonBlocked},
		// nginx refuses a second Authorization line: one seen is the only one.
		{"authorization visible, not blocked", many(map[string][]string{"authorization": {"Bearer " + other}}),
			[]blk{jwtBlk, {kind: "jwt", value: tok}, {kind: "header", name: "authorization", value: "Bearer " + tok}}, ""},
		{"authorization visible, cookie blocks too", many(map[string][]string{"authorization": {"Bearer " + other}}), []blk{jwtBlk, cookieBlk}, reasonTooManyHeaders},
		// Under the limit nothing can hide.
		{"under the limit", func() map[string][]string {
			h := many(map[string][]string{"cookie": {"a=1"}, "x-api-key": {"fine"}})
			delete(h, "a-0000")
			delete(h, "a-0001")
			return h // 999 lines
		}(), []blk{cookieBlk, headerBlk, jwtBlk}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := access(t, `{}`, &fakeRequest{headers: tt.headers}, tt.blocks...)
			var body map[string]string
			_ = json.Unmarshal(req.body, &body)
			if req.exited != (tt.reason != "") || body["reason"] != tt.reason {
				t.Fatalf("exit %v %s, want reason %q", req.exited, req.body, tt.reason)
			}
			want := callHeaders // no other call can see past the limit
			if tt.reason != "" {
				want += "," + callVar + "," + callExit
			}
			if got := callNames(req.calls); got != want {
				t.Errorf("calls = %s, want %s", got, want)
			}
		})
	}
}

func TestExpiryToTheMillisecond(t *testing.T) {
	now := time.Now().UnixMilli()
	w := newTestWriter(t, blk{kind: "ip", value: "203.0.113.7", exp: now + 60_000}, blk{kind: "ip", value: "203.0.113.8", exp: now + 60_000, service: "s"})
	a := mustAddr(t, "203.0.113.7")
	for _, tc := range []struct {
		at   int64
		want bool
	}{{now, true}, {now + 59_999, true}, {now + 60_000, false}, {now + 90_000, false}} {
		m := matcher{x: w.idx, p: w.idx.plan.Load(), now: tc.at}
		if _, got := m.matchAddr(a); got != tc.want {
			t.Errorf("at +%dms blocked = %v, want %v", tc.at-now, got, tc.want)
		}
	}
	m := matcher{x: w.idx, p: w.idx.plan.Load(), now: now + 60_000}
	if _, _ = m.matchAddr(mustAddr(t, "203.0.113.8")); m.n != 0 {
		t.Errorf("an expired scoped block is still a candidate")
	}
}

func TestClaimValues(t *testing.T) {
	tests := []struct {
		claims, name, value string
		want                bool
	}{
		{`{"sub":"u"}`, "sub", "u", true},
		{` { "a" : [1, {"sub":"x"}], "sub" : "u" } `, "sub", "u", true},
		{`{"a":"}\"{","sub":"u"}`, "sub", "u", true},
		{`{"s\u0075b":"u"}`, "sub", "u", true},
		{`{"sub":"\ud83d\ude00"}`, "sub", "😀", true},
		{`{"sub":1e21}`, "sub", fmt.Sprint(1e21), true},
		{`{"sub":-0.5}`, "sub", fmt.Sprint(-0.5), true},
		{`{"sub":42}`, "sub", "42", true},
		{`{"sub":true}`, "sub", "true", false},
		{`{"sub":null,"x":"u"}`, "sub", "u", false},
		{`{"sub":"u"`, "sub", "u", true},
		{`[{"sub":"u"}]`, "sub", "u", false},
		{`{"x":{"sub":"u"}}`, "sub", "u", false},
		{`{"a":true,"sub":"u"}`, "sub", "u", true},
		{`{"a":{"b":[true,null]},"sub":"u"}`, "sub", "u", true},
		{`not json`, "sub", "u", false},
	}
	for _, tt := range tests {
		t.Run(tt.claims, func(t *testing.T) {
			w := newTestWriter(t, blk{kind: "jwt", name: tt.name, value: tt.value})
			m := matcher{x: w.idx, p: w.idx.plan.Load(), now: time.Now().UnixMilli()}
			if got := m.matchToken(jwtToken(t, tt.claims)); got != tt.want {
				t.Errorf("matchToken = %v, want %v", got, tt.want)
			}
		})
	}
	// Garbage must never panic.
	w := newTestWriter(t, blk{kind: "jwt", name: "sub", value: "u"})
	m := matcher{x: w.idx, p: w.idx.plan.Load(), now: time.Now().UnixMilli()}
	for _, tok := range []string{"", ".", "..", "a.b.c", "a.%%%.c", "a." + strings.Repeat("x", 5000) + ".c", "a.e30.c", "a.eyI.c"} {
		m.matchToken(tok)
	}
}

func TestBearerToken(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer a.b.c": "a.b.c", "bearer   a.b.c ": "a.b.c", "BEARER x": "x", "a.b.c": "a.b.c",
		"Basic dXNlcg==": "", "": "", "Bearer": "", "token": "",
	} {
		if got := bearerToken(in); got != want {
			t.Errorf("bearerToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestQueryUnescape(t *testing.T) {
	long := strings.Repeat("x", unescapeBufSize) // fits the buffer exactly; one more does not
	for in, want := range map[string]string{
		"a+b": "a b", "a%2Fb": "a/b", "%zz": "%zz", "%4": "%4", "plain": "plain", "%e9": "\xe9",
		long[1:] + "+": long[1:] + " ", long + "+": long + " ", long + "%41": long + "A",
	} {
		var buf [unescapeBufSize]byte
		if got := queryUnescape(in, &buf); got != want {
			t.Errorf("queryUnescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// nextPair splits cookies and query strings alike. Empty parts are skipped for both: it is
// what the query loop always did (eachPair), and the cookie loop's old reading of an empty
// part as a cookie named "" with value "" let a block on that pair refuse any request whose
// Cookie header has ";;" or a trailing "; ". An explicit "=" is still a pair.
func TestNextPair(t *testing.T) {
	for _, tt := range []struct {
		in   string
		sep  byte
		trim bool
		want []string
	}{
		{"a=1&b&&=&c=x=y&", '&', false, []string{"a", "1", "b", "", "", "", "c", "x=y"}},
		{" a = 1 ;; b ;  ; =;\tc=2\t; ", ';', true, []string{"a ", " 1", "b", "", "", "", "c", "2"}},
		{"", '&', false, nil},
		{";;;", ';', true, nil},
	} {
		var got []string
		s := tt.in
		for {
			name, value, ok := nextPair(&s, tt.sep, tt.trim)
			if !ok {
				break
			}
			got = append(got, name, value)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("nextPair(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	w := newTestWriter(t, blk{kind: "cookie", name: "", value: ""}, blk{kind: "query", name: "", value: ""})
	m := matcher{x: w.idx, p: w.idx.plan.Load(), now: time.Now().UnixMilli()}
	for _, h := range []string{"a=1;; b=2", "a=1; ", "; ;a=1"} {
		if m.matchCookies(h) {
			t.Errorf("matchCookies(%q) blocked on an empty part", h)
		}
	}
	if !m.matchCookies("a=1; =; b=2") {
		t.Error(`matchCookies: "=" is a cookie named "" and was not blocked`)
	}
	for _, q := range []string{"a=1&&b=2", "a=1&"} {
		if m.matchQuery(q) {
			t.Errorf("matchQuery(%q) blocked on an empty part", q)
		}
	}
	if !m.matchQuery("a=1&=&b=2") {
		t.Error(`matchQuery: "=" is a parameter named "" and was not blocked`)
	}
}

// The block kinds the consumer writes must all be indexable, with the key as written.
func TestEveryKindIndexable(t *testing.T) {
	for _, k := range schemas.EntityTypes() {
		b := blk{kind: k, value: "v"}
		switch k {
		case schemas.EntityIP:
			b.value = "192.0.2.1"
		case schemas.EntityCIDR:
			b.value = "192.0.2.0/24"
		case schemas.EntityHeader, schemas.EntityCookie, schemas.EntityQuery:
			b.name = "n"
		}
		w := newTestWriter(t, b)
		if got := w.idx.counts[kindIndex(k)].Load(); got != 1 {
			t.Errorf("%s: count %d, want 1", k, got)
		}
	}
}

// More scoped candidates than the matcher keeps inline: the last one decides.
func TestManyScopedCandidates(t *testing.T) {
	blocks := []blk{{kind: "ip", value: "10.1.2.3", service: "a"}}
	for i, p := range []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.0/28", "10.1.2.0/30"} {
		svc := fmt.Sprint("s", i)
		if i == 0 {
			svc = "orders"
		}
		blocks = append(blocks, blk{kind: "cidr", value: p, service: svc})
	}
	req := access(t, `{}`, &fakeRequest{ip: "10.1.2.3", service: [2]string{"s-1", "orders"}}, blocks...)
	if !req.exited {
		t.Fatalf("not blocked; calls %v", req.calls)
	}
	req = access(t, `{}`, &fakeRequest{ip: "10.1.2.3", service: [2]string{"s-1", "users"}}, blocks...)
	if req.exited || callNames(req.calls) != callIP+","+callService {
		t.Fatalf("blocked %v, calls %v; want allowed after one get_service", req.exited, req.calls)
	}
}
