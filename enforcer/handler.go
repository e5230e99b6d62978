package enforcer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/Kong/go-pdk"
)

// requestIDPlaceholder in response_body is replaced by the request's id.
const requestIDPlaceholder = "{request_id}"

// response is an instance's answer to a blocked request.
type response struct {
	status  int
	body    string // custom body template; "" = the default JSON
	needID  bool   // the custom body needs the request id (one extra PDK call, on blocked requests only)
	headers map[string][]string
}

var (
	jsonHeaders = map[string][]string{"Content-Type": {"application/json; charset=utf-8"}}
	textHeaders = map[string][]string{"Content-Type": {"text/plain; charset=utf-8"}}
	// Retry-After tells clients refused before the first sync when to try again.
	unavailableHeaders = map[string][]string{"Content-Type": {"application/json; charset=utf-8"}, "Retry-After": {"5"}}
)

func newResponse(s settings) response {
	resp := response{status: s.status, body: s.body, headers: jsonHeaders}
	if s.body != "" {
		resp.needID = strings.Contains(s.body, requestIDPlaceholder)
		if !s.bodyJSON {
			resp.headers = textHeaders
		}
	}
	return resp
}

// Access is the plugin's access phase: the only phase it runs in, so Kong makes one event
// per request. It answers from memory; the only round trips are the PDK calls the active
// blocks need (see docs/ENFORCER.md).
func (c *Config) Access(kong *pdk.PDK) {
	c.access(pdkRequest{kong})
}

func (c *Config) access(r request) {
	in := c.inst
	// go-pdk has no recover: a panic here would kill the process serving every request.
	defer func() {
		if p := recover(); p != nil {
			in.panicked(r, p)
		}
	}()
	if in == nil || in.err != nil {
		in.refused(r)
		return
	}
	x := in.mirror.current()
	if x == nil {
		in.notSynced(r)
		return
	}
	p := x.plan.Load()
	if p.none() {
		in.rt.m.allowed.Inc()
		return
	}
	m := matcher{x: x, p: p, now: time.Now().UnixMilli()}
	v, err := m.evaluate(r, in.known)
	if err != nil {
		// A failed PDK call means the connection to Kong is gone: nobody to answer.
		in.rt.m.pdkErrors.Inc()
		in.warn("pdk call failed", err)
		return
	}
	if !v.blocked {
		in.rt.m.allowed.Inc()
		return
	}
	in.rt.m.blockedBy(v).Inc()
	in.deny(r, v)
}

// deny answers a blocked request with the instance's status and body.
func (in *instance) deny(r request, v verdict) {
	var body []byte
	switch {
	case in.resp.body == "":
		body = defaultBody(in.resp.status, v.reason, requestID(r))
	case in.resp.needID:
		id, _ := json.Marshal(requestID(r)) // quoted and escaped; the placeholder sits in a JSON string or text
		repl := string(id[1 : len(id)-1])
		body = []byte(strings.ReplaceAll(in.resp.body, requestIDPlaceholder, repl))
	default:
		body = []byte(in.resp.body)
	}
	in.rt.log.Debug().Int("instance", in.seq).Str("kind", string(v.kind)).Str("reason", v.reason).Msg("request blocked")
	r.Exit(in.resp.status, body, in.resp.headers)
}

// failClosed answers status with the default body.
func failClosed(r request, status int, reason string, headers map[string][]string) {
	r.Exit(status, defaultBody(status, reason, requestID(r)), headers)
}

// notSynced answers a request that arrives before the first block list: the fail mode
// decides.
func (in *instance) notSynced(r request) {
	if in.s.failOpen {
		in.rt.m.failOpen.Inc()
		return
	}
	in.rt.m.failClosed.Inc()
	failClosed(r, http.StatusServiceUnavailable, reasonNotSynced, unavailableHeaders)
}

// refused answers a request on an instance whose config is invalid: per its fail mode when
// that part was readable, closed otherwise.
func (in *instance) refused(r request) {
	if in == nil {
		in = &instance{err: fmt.Errorf("instance has no config")}
	}
	if in.rt != nil {
		in.rt.m.refused.Inc()
		in.warn("plugin instance refused: invalid config", in.err)
	}
	if in.s.failOpen {
		return
	}
	failClosed(r, http.StatusInternalServerError, reasonMisconfigured, jsonHeaders)
}

// panicked answers after a recovered panic, per the fail mode, and logs the stack.
func (in *instance) panicked(r request, p any) {
	if in == nil || in.rt == nil {
		failClosed(r, http.StatusInternalServerError, reasonInternal, jsonHeaders)
		return
	}
	in.rt.m.panics.Inc()
	in.rt.log.Error().Int("instance", in.seq).Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).
		Msg("handler panicked; request answered per the fail mode")
	if in.s.failOpen {
		return
	}
	failClosed(r, http.StatusInternalServerError, reasonInternal, jsonHeaders)
}

// warn logs err at most every 10 seconds per instance, so one bad instance cannot flood
// Kong's log at request rate.
func (in *instance) warn(msg string, err error) {
	now := time.Now().UnixMilli()
	last := in.lastWarn.Load()
	if now-last < 10_000 || !in.lastWarn.CompareAndSwap(last, now) {
		return
	}
	in.rt.log.Error().Int("instance", in.seq).Err(err).Msg(msg)
}

// requestID is Kong's id for the request (the $kong_request_id variable, Kong 3.5+, also
// sent as X-Kong-Request-Id), or a random one when Kong has none. Called on refused requests
// only: it costs a PDK call.
func requestID(r request) string {
	if id, err := r.Var("kong_request_id"); err == nil && id != "" {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func defaultBody(status int, reason, id string) []byte {
	body, _ := json.Marshal(struct {
		Message   string `json:"message"`
		Reason    string `json:"reason"`
		RequestID string `json:"request_id"`
	}{http.StatusText(status), reason, id})
	return body
}
