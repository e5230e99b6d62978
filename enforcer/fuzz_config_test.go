package enforcer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// sources are the names resolve gives a field's value in its messages, by where the value
// came from: the config, the environment, the default. A message starts with the source of
// the value it refuses.
type sources [3]string

func src(field, env string) sources { return sources{"config." + field, env, field + " default"} }

// configSources lists every field's sources, in Config's order.
func configSources() []sources {
	return []sources{src("nats_url", "BLOCKWIRE_NATS_URL"), src("nats_credentials", "BLOCKWIRE_NATS_CREDS"),
		src("bucket", "BLOCKWIRE_BUCKET"), src("status_code", "BLOCKWIRE_ENFORCER_STATUS_CODE"),
		src("response_body", "BLOCKWIRE_ENFORCER_RESPONSE_BODY"), src("fail_mode", "BLOCKWIRE_FAIL_MODE")}
}

// fallback is the documented precedence: the config's value, else the environment's, else
// the default, trimmed; it returns the value and its source.
func fallback(from sources, cfg, env, def string) (string, string) {
	switch {
	case strings.TrimSpace(cfg) != "":
		return strings.TrimSpace(cfg), from[0]
	case strings.TrimSpace(env) != "":
		return strings.TrimSpace(env), from[1]
	}
	return def, from[2]
}

// expected is what resolve must return for c and e, worked out from the documented
// constraints, and the sources of the values that break them.
type expected struct {
	s   settings
	bad map[string]bool
}

func expect(c *Config, e envDefaults) expected {
	var x expected
	x.bad = map[string]bool{}
	all := configSources()
	srcURL, srcCreds, srcBucket, srcStatus, srcBody, srcMode := all[0], all[1], all[2], all[3], all[4], all[5]
	var from string
	x.s.loc.url, from = fallback(srcURL, c.NATSURL, e.natsURL, DefaultNATSURL)
	if !serverListOK(x.s.loc.url) {
		x.bad[from] = true
	}
	x.s.loc.creds, from = fallback(srcCreds, c.NATSCredentials, e.creds, "")
	if _, err := os.Stat(x.s.loc.creds); x.s.loc.creds != "" && err != nil {
		x.bad[from] = true
	}
	x.s.loc.bucket, from = fallback(srcBucket, c.Bucket, e.bucket, DefaultBucket)
	if !bucketOK(x.s.loc.bucket) {
		x.bad[from] = true
	}
	x.s.status, from = c.StatusCode, srcStatus[0]
	if x.s.status == 0 {
		var st string
		st, from = fallback(srcStatus, "", e.status, "403")
		n, err := strconv.Atoi(st)
		if err != nil {
			x.bad[from] = true
		}
		x.s.status = n
	}
	if x.s.status < 400 || x.s.status > 599 {
		x.bad[from] = true
	}
	x.s.body, from = fallback(srcBody, c.ResponseBody, e.body, "")
	if len(x.s.body) > 64<<10 {
		x.bad[from] = true
	}
	mode, from := fallback(srcMode, c.FailMode, e.failMode, "open")
	switch asciiLower(mode) {
	case "open":
		x.s.failOpen = true
	case "closed":
	default:
		x.bad[from] = true
	}
	return x
}

// serverListOK: a comma-separated list of nats://, tls://, ws:// or wss:// URLs with a host,
// or bare host:port (nats.go adds nats://).
func serverListOK(list string) bool {
	for _, u := range strings.Split(list, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Hostname() == "" {
			return false
		}
		switch pu.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return false
		}
	}
	return true
}

// bucketOK: nats.go's bucket name syntax.
func bucketOK(b string) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return b != ""
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// secret is put into the user information of every server of a nats_url, where nats.go
// takes credentials from; it must never reach a message or a log line. numericSecret is a
// password nats.go would cut at a comma into servers that are all valid URLs.
const (
	secret        = "Sentinel7pw"
	numericSecret = "4815162342"
)

// leaks reports whether m holds a secret.
func leaks(m string) bool { return strings.Contains(m, secret) || strings.Contains(m, numericSecret) }

// withSecret returns list with credentials holding secret in front of each server: after
// its scheme, or at its start when it has none (nats.go then adds nats://). kind 1: a
// password ("user:secret@host"), 2: a token ("secret@host"), 3: a password with a "/" that
// should have been escaped, which makes the URL invalid (the error must still not quote
// it), 4: a password with a comma that should have been escaped, which cuts the server in
// two ("nats://blockwire:secret" and "secret@host"), 5: the same with a numeric password,
// which makes both halves valid servers. A server whose "://" follows something that is no
// URL scheme is left alone: there the secret would be in a path.
func withSecret(list string, kind uint8) string {
	cred := "blockwire:" + secret + "@"
	switch kind {
	case 2:
		cred = secret + "@"
	case 3:
		cred = "blockwire:" + secret + "/" + secret + "@"
	case 4:
		cred = "blockwire:" + secret + "," + secret + "@"
	case 5:
		cred = "blockwire:" + numericSecret + "," + numericSecret + "@"
	}
	servers := strings.Split(list, ",")
	for i, s := range servers {
		t := strings.TrimSpace(s)
		switch scheme, rest, ok := strings.Cut(t, "://"); {
		case t == "":
		case !ok:
			servers[i] = cred + t
		case isScheme(scheme):
			servers[i] = scheme + "://" + cred + rest
		}
	}
	return strings.Join(servers, ",")
}

// isScheme: RFC 3986's scheme syntax.
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// kongConfig is the instance config with every field Config.UnmarshalJSON reads, decoded by
// plain encoding/json: the reference for what the plugin decodes.
type kongConfig struct {
	NATSURL         string          `json:"nats_url"`
	NATSCredentials string          `json:"nats_credentials"`
	Bucket          string          `json:"bucket"`
	StatusCode      int             `json:"status_code"`
	ResponseBody    string          `json:"response_body"`
	FailMode        string          `json:"fail_mode"`
	Seq             int             `json:"__seq__"`
	ServiceID       json.RawMessage `json:"service_id"`
	RouteID         json.RawMessage `json:"route_id"`
}

// FuzzConfig: decoding and resolving an instance config (Kong's JSON plus the BLOCKWIRE_*
// environment) never panics and never fails the decode (go-pdk would drop the connection);
// what resolve accepts meets every documented constraint with the documented precedence;
// what it refuses is refused with a message per offending value, naming where that value
// came from; and with credentials in nats_url (secretKind: see withSecret), they appear in
// no error, no log line and no redacted URL.
func FuzzConfig(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join(fuzzSeeds, "config", "*.json"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no config seeds: %v", err)
	}
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "", "", "", uint8(0))
		f.Add(b, "nats://env-nats:4222", "env_blocks", "429", "closed", uint8(1+i%3))
	}
	f.Add([]byte(`{}`), " blockwire:pw@nats:4222 , tls://n2", "b", "x", "sometimes", uint8(2))
	f.Add([]byte(`{"nats_url":"nats://nats.internal:4222"}`), "", "", "", "", uint8(4))
	f.Add([]byte(`{"nats_url":"nats://nats.internal:4222"}`), "", "", "", "", uint8(5))
	f.Add([]byte(`{"nats_url":"nats://n1:4222, n2:4222"}`), "", "", "", "", uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, envURL, envBucket, envStatus, envFail string, secretKind uint8) {
		env := envDefaults{natsURL: envURL, bucket: envBucket, status: envStatus, failMode: envFail}
		var ref kongConfig
		refErr := json.Unmarshal(data, &ref)
		secretIn := false
		if kind := secretKind % 6; kind != 0 && refErr == nil && !leaks(fmt.Sprint(ref, env)) {
			ref.NATSURL = withSecret(ref.NATSURL, kind)
			env.natsURL = withSecret(env.natsURL, kind)
			b, err := json.Marshal(ref)
			if err != nil {
				t.Fatal(err)
			}
			data, secretIn = b, true
			refErr = json.Unmarshal(data, &ref) // Marshal may have replaced invalid UTF-8
		}

		// Without a runtime (as for -dump): decoded like plain encoding/json, refused, no error.
		var c Config
		if err := c.UnmarshalJSON(data); err != nil || c.inst == nil || c.inst.err == nil {
			t.Fatalf("UnmarshalJSON without a runtime: %v, instance %+v", err, c.inst)
		}
		type fields struct {
			url, creds, bucket string
			status             int
			body, mode         string
		}
		got := fields{c.NATSURL, c.NATSCredentials, c.Bucket, c.StatusCode, c.ResponseBody, c.FailMode}
		want := fields{ref.NATSURL, ref.NATSCredentials, ref.Bucket, ref.StatusCode, ref.ResponseBody, ref.FailMode}
		if got != want {
			t.Fatalf("decoded %+v, encoding/json decodes %+v", got, want)
		}

		s, err := env.resolve(&c)
		x := expect(&c, env)
		checkResolved(t, s, err, x)
		var msgs []string
		if err != nil {
			msgs = append(msgs, err.Error())
		} else {
			msgs = append(msgs, redactURL(s.loc.url))
		}

		// With a runtime, as go-pdk starts an instance. The location's mirror is registered
		// beforehand so that nothing connects anywhere.
		var log bytes.Buffer
		rt := &Runtime{log: zerolog.New(&log), env: env, mirrors: map[location]*Mirror{}}
		mr := newMirror(mirrorConfig{loc: s.loc, log: zerolog.Nop()})
		rt.mirrors[s.loc] = mr
		ci := rt.New().(*Config)
		if err := ci.UnmarshalJSON(data); err != nil || ci.inst == nil {
			t.Fatalf("UnmarshalJSON failed: %v", err)
		}
		switch in := ci.inst; {
		case refErr != nil:
			if in.err == nil || !strings.Contains(in.err.Error(), "decode config") {
				t.Fatalf("encoding/json refuses the config (%v), the instance has error %v", refErr, in.err)
			}
		case (in.err == nil) != (err == nil):
			t.Fatalf("instance error %v, resolve error %v", in.err, err)
		case in.err == nil && (in.s != s || in.mirror != mr):
			t.Fatalf("instance settings %+v, want %+v (mirror %p, want %p)", in.s, s, in.mirror, mr)
		}
		if ci.inst.err != nil {
			msgs = append(msgs, ci.inst.err.Error())
		}
		msgs = append(msgs, log.String())
		if secretIn {
			for _, m := range msgs {
				if leaks(m) {
					t.Fatalf("nats_url %q, env %q: credentials leak into %q", ref.NATSURL, env.natsURL, m)
				}
			}
		}
	})
}

// checkResolved compares resolve's answer with the documented constraints in x.
func checkResolved(t *testing.T, s settings, err error, x expected) {
	t.Helper()
	if err == nil {
		if len(x.bad) != 0 {
			t.Fatalf("resolve accepted %+v, which breaks the constraints on %v", s, x.bad)
		}
		if s.status < 400 || s.status > 599 || !serverListOK(s.loc.url) || !bucketOK(s.loc.bucket) || len(s.body) > maxBodyLen {
			t.Fatalf("accepted settings break a constraint: %+v", s)
		}
		want := x.s
		want.bodyJSON = s.body == "" || json.Valid([]byte(strings.ReplaceAll(s.body, requestIDPlaceholder, "4b9cbf1a2e9c4e6d")))
		if s != want {
			t.Fatalf("resolve = %+v, want %+v", s, want)
		}
		return
	}
	// One message per refused value (two for a status that is no number), each starting
	// with where that value came from; nothing else refused.
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	named := map[string]bool{}
	for _, e := range errs {
		src := ""
		for _, g := range configSources() {
			for _, s := range g {
				if m := e.Error(); strings.HasPrefix(m, s+" ") || strings.HasPrefix(m, s+":") {
					src = s
				}
			}
		}
		if src == "" {
			t.Fatalf("message %q names no field", e)
		}
		named[src] = true
	}
	if fmt.Sprint(named) != fmt.Sprint(x.bad) {
		t.Fatalf("resolve refused %v (%v); the offending values come from %v", named, err, x.bad)
	}
}
