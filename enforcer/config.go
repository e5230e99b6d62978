package enforcer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// Config is the plugin's configuration as Kong stores it. go-pdk derives Kong's schema from
// the exported fields: the json tag is the field name verbatim (so no ",omitempty"), and only
// strings, booleans, int/int32, floats, slices, maps and structs survive (an int64 field
// would silently vanish). Every field is optional: an empty value falls back to the
// BLOCKWIRE_* environment variable named beside it, then to the default, so the plugin works
// when added with no config at all.
//
// go-pdk decodes each instance's config into a fresh Config and shares it between that
// instance's concurrent requests: UnmarshalJSON resolves everything once, and Access only
// reads.
type Config struct {
	NATSURL         string `json:"nats_url"`         // BLOCKWIRE_NATS_URL, default nats://127.0.0.1:4222
	NATSCredentials string `json:"nats_credentials"` // BLOCKWIRE_NATS_CREDS: a .creds file on the Kong node
	Bucket          string `json:"bucket"`           // BLOCKWIRE_BUCKET, default noname_blocks
	StatusCode      int    `json:"status_code"`      // BLOCKWIRE_ENFORCER_STATUS_CODE, default 403
	ResponseBody    string `json:"response_body"`    // BLOCKWIRE_ENFORCER_RESPONSE_BODY; "{request_id}" is replaced
	FailMode        string `json:"fail_mode"`        // BLOCKWIRE_FAIL_MODE: open (default) or closed

	rt   *Runtime
	inst *instance
}

// Defaults for what neither the instance config nor the environment sets.
const (
	DefaultNATSURL    = "nats://127.0.0.1:4222"
	DefaultBucket     = "noname_blocks"
	DefaultStatusCode = 403
	DefaultFailMode   = "open"
)

// Fail modes: what a request gets while the plugin has no block list yet (never synced and
// no snapshot), when the handler panics, or when the instance's config is invalid.
const (
	FailOpen   = "open"   // let the request through
	FailClosed = "closed" // refuse it (503 before sync, 500 on an internal error)
)

// maxBodyLen bounds response_body: it is sent with every blocked request.
const maxBodyLen = 64 << 10

var bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// kongFields are what Kong adds to every instance config.
type kongFields struct {
	Seq       int             `json:"__seq__"`
	ServiceID json.RawMessage `json:"service_id"`
	RouteID   json.RawMessage `json:"route_id"`
}

// UnmarshalJSON decodes an instance config and resolves it: settings, the shared mirror for
// its NATS location, the response. It never fails: go-pdk would answer a failed start with a
// dropped connection, and Kong (3.8+) with a 500 on every request without a word of why.
// Instead an invalid config gives an instance that logs why and answers per its fail mode.
func (c *Config) UnmarshalJSON(data []byte) error {
	type fields Config // the same fields without this method
	var f struct {
		fields
		kongFields
	}
	err := json.Unmarshal(data, &f)
	c.NATSURL, c.NATSCredentials, c.Bucket = f.NATSURL, f.NATSCredentials, f.Bucket
	c.StatusCode, c.ResponseBody, c.FailMode = f.StatusCode, f.ResponseBody, f.FailMode
	if c.rt == nil {
		c.inst = &instance{err: errors.New("no runtime: the plugin was not started by its main")}
		return nil
	}
	if err != nil {
		err = fmt.Errorf("decode config: %w", err)
	}
	c.inst = c.rt.newInstance(c, f.kongFields, err)
	return nil
}

// rawString reads a JSON string, or "" for null or another type.
func rawString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// envDefaults are the BLOCKWIRE_* fallbacks, read once at start: Kong starts the plugin
// server with its own environment.
type envDefaults struct {
	natsURL, creds, bucket, status, body, failMode string
}

func readEnvDefaults(getenv func(string) string) envDefaults {
	return envDefaults{
		natsURL:  getenv("BLOCKWIRE_NATS_URL"),
		creds:    getenv("BLOCKWIRE_NATS_CREDS"),
		bucket:   getenv("BLOCKWIRE_BUCKET"),
		status:   getenv("BLOCKWIRE_ENFORCER_STATUS_CODE"),
		body:     getenv("BLOCKWIRE_ENFORCER_RESPONSE_BODY"),
		failMode: getenv("BLOCKWIRE_FAIL_MODE"),
	}
}

// location is where a mirror reads blocks from; instances with the same location share one
// connection and one index.
type location struct {
	url, creds, bucket string
}

// settings are an instance's resolved and validated config.
type settings struct {
	loc      location
	status   int
	body     string
	bodyJSON bool
	failOpen bool
}

// pick returns the first non-empty value, naming where it came from for error messages.
func pick(field, v, envName, env, def string) (string, string) {
	switch {
	case strings.TrimSpace(v) != "":
		return strings.TrimSpace(v), "config." + field
	case strings.TrimSpace(env) != "":
		return strings.TrimSpace(env), envName
	}
	return def, field + " default"
}

// resolve applies the fallbacks to c and validates the result, naming every problem.
func (e envDefaults) resolve(c *Config) (settings, error) {
	var (
		s    settings
		errs []error
		from string
	)
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	s.loc.url, from = pick("nats_url", c.NATSURL, "BLOCKWIRE_NATS_URL", e.natsURL, DefaultNATSURL)
	if err := checkNATSURL(s.loc.url); err != nil {
		bad("%s %q: %w", from, redactURL(s.loc.url), err) // logged: no credentials
	}
	s.loc.creds, from = pick("nats_credentials", c.NATSCredentials, "BLOCKWIRE_NATS_CREDS", e.creds, "")
	if s.loc.creds != "" {
		if _, err := os.Stat(s.loc.creds); err != nil {
			bad("%s: %w", from, err)
		}
	}
	s.loc.bucket, from = pick("bucket", c.Bucket, "BLOCKWIRE_BUCKET", e.bucket, DefaultBucket)
	if !bucketName.MatchString(s.loc.bucket) {
		bad("%s %q: a KV bucket name has only letters, digits, - and _", from, s.loc.bucket)
	}

	s.status = c.StatusCode
	from = "config.status_code"
	if s.status == 0 {
		st, src := pick("status_code", "", "BLOCKWIRE_ENFORCER_STATUS_CODE", e.status, strconv.Itoa(DefaultStatusCode))
		n, err := strconv.Atoi(st)
		if err != nil {
			bad("%s %q: not a number", src, st)
		}
		s.status, from = n, src
	}
	if s.status < 400 || s.status > 599 {
		bad("%s %d: a block answers with a 4xx or 5xx status (400-599)", from, s.status)
	}

	s.body, from = pick("response_body", c.ResponseBody, "BLOCKWIRE_ENFORCER_RESPONSE_BODY", e.body, "")
	if len(s.body) > maxBodyLen {
		bad("%s: %d bytes, at most %d", from, len(s.body), maxBodyLen)
	}
	s.bodyJSON = s.body == "" || json.Valid([]byte(strings.ReplaceAll(s.body, requestIDPlaceholder, "x")))

	mode, from := pick("fail_mode", c.FailMode, "BLOCKWIRE_FAIL_MODE", e.failMode, DefaultFailMode)
	switch strings.ToLower(mode) {
	case FailOpen:
		s.failOpen = true
	case FailClosed:
	default:
		bad("%s %q: want %q or %q", from, mode, FailOpen, FailClosed)
	}
	return s, errors.Join(errs...)
}

// checkNATSURL accepts what nats.go accepts: a comma-separated list of nats://, tls://,
// ws:// or wss:// URLs, or bare host:port. nats.go splits the list at every comma, so a
// password holding one is cut in two ("nats://alice:s3c" and "r3t@host"): when any server
// has credentials, an error quotes nothing of any server.
func checkNATSURL(list string) error {
	creds := strings.Contains(list, "@")
	for u := range strings.SplitSeq(list, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			return errors.New("empty server in the list")
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		pu, err := url.Parse(u)
		if err != nil {
			// Not err: it quotes the URL. Nor its cause when there may be credentials: an
			// unescaped "/" or "?" in a password puts part of it in the "port" it quotes.
			if creds {
				return errors.New("not a URL (details withheld: the list has credentials)")
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("not a URL: %w", err)
		}
		switch pu.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			if creds {
				return errors.New("a scheme other than nats, tls, ws or wss (details withheld: the list has credentials)")
			}
			return fmt.Errorf("scheme %q: want nats, tls, ws or wss", pu.Scheme)
		}
		if pu.Hostname() == "" {
			return errors.New("no host")
		}
	}
	return nil
}

// redacted stands for a server that may hold a piece of a password.
const redacted = "[redacted]"

// redactURL drops user information from a server list for logs, metric labels and errors.
// When any server has credentials ("@"), each server keeps only its scheme and what
// follows its last "@"; a server without "@" in such a list may be the first half of a
// password cut at a comma ("nats://alice:s3c,r3t@host" is two servers to nats.go, and
// "nats://alice:1234,5678@host" two valid ones), so it keeps only its scheme.
func redactURL(list string) string {
	creds := strings.Contains(list, "@")
	var out []string
	for u := range strings.SplitSeq(list, ",") {
		u = strings.TrimSpace(u)
		if creds {
			scheme := ""
			if s, _, ok := strings.Cut(u, "://"); ok && knownScheme(s) {
				scheme = s + "://"
			}
			if at := strings.LastIndexByte(u, '@'); at >= 0 {
				u = scheme + u[at+1:]
			} else {
				u = scheme + redacted
			}
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}

// knownScheme reports whether s is a scheme nats.go connects with.
func knownScheme(s string) bool {
	switch strings.ToLower(s) {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

// instance is one resolved plugin instance. It is immutable after UnmarshalJSON but for the
// log limiter.
type instance struct {
	seq      int
	rt       *Runtime
	mirror   *Mirror
	known    scopeIDs
	s        settings
	resp     response
	err      error        // set: the instance is refused and answers per failOpen
	lastWarn atomic.Int64 // Unix ms of the last refusal log line, to keep the log readable
}
