package kongfake

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Options shape one fake Kong. The zero value is a Kong 3.9 in DB mode without authentication.
type Options struct {
	// DBLess starts the fake as a DB-less Kong: GET / reports database "off" and every write is
	// answered 405. Default false. Server.SetDBLess switches later.
	DBLess bool
	// RequireHeaders are headers every request must carry with exactly these values (as Kong
	// Enterprise's Kong-Admin-Token); a request without them is answered 401. Default none.
	RequireHeaders http.Header
	// Plugins are the plugin names Kong has enabled; others are refused. Default DefaultPlugins().
	Plugins []string
	// AllowSchemaViolations keeps the test going when a request is refused for its content
	// (schema violation, unknown field): the fake still answers 400. Default false, for such a
	// request is a client bug. Tests of the fake's own refusals set it.
	AllowSchemaViolations bool
	// Version is the Kong version GET / reports. Default "3.9.1".
	Version string
	// MaxBodyBytes bounds a request body, as Kong's admin client_max_body_size (10m). Default 10 MiB.
	MaxBodyBytes int64
}

// Request is one request the fake received.
type Request struct {
	Method    string
	Path      string
	RawQuery  string
	Header    http.Header
	BodyBytes int
	Status    int  // the status answered; 0 when the connection was dropped
	Fault     bool // an injected fault (or DB-less mode) answered it
}

// Write reports whether the request was a write (POST, PUT, PATCH, DELETE).
func (r Request) Write() bool { return isWrite(r.Method) }

// Server is a fake Kong Admin API on an httptest server, closed when the test ends.
type Server struct {
	tb      testing.TB
	opts    Options
	spec    *spec
	schemas map[string]pluginSchema
	httpSrv *httptest.Server
	nodeID  string

	mu         sync.Mutex
	st         *state
	dbless     bool
	faults     []*fault
	nextFault  int
	requests   []Request
	generation int // bumped by ResetRequests
}

// New starts a fake Kong Admin API for tb; t.Cleanup closes it.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Plugins == nil {
		opts.Plugins = DefaultPlugins()
	}
	if opts.Version == "" {
		opts.Version = "3.9.1"
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 10 << 20
	}
	sp, err := loadSpec()
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{
		tb: tb, opts: opts, spec: sp, schemas: pluginSchemas(), nodeID: uuid.NewString(),
		st: newState(), dbless: opts.DBLess,
	}
	s.httpSrv = httptest.NewServer(s)
	tb.Cleanup(s.httpSrv.Close)
	return s
}

// URL is the Admin API's base URL, e.g. http://127.0.0.1:41234.
func (s *Server) URL() string { return s.httpSrv.URL }

// Close stops the server (t.Cleanup also does); later requests fail to connect.
func (s *Server) Close() { s.httpSrv.Close() }

// SetDBLess switches DB-less mode on or off.
func (s *Server) SetDBLess(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dbless = on
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetRequests forgets the requests received so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
	s.generation++
}

// Count returns how many requests received so far satisfy keep.
func (s *Server) Count(keep func(Request) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if keep(r) {
			n++
		}
	}
	return n
}

// Writes returns how many writes were accepted (answered 2xx) so far.
func (s *Server) Writes() int {
	return s.Count(func(r Request) bool { return r.Write() && r.Status >= 200 && r.Status < 300 })
}

// ServeHTTP checks the request against the description, then Kong's rules, faults and mode, and
// answers as Kong would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, s.opts.MaxBodyBytes+1))
	// The request is recorded as it arrives and its status before the answer leaves, so a test
	// that sees the answer (or the state it changed) also sees the record.
	rec, recLocked := s.record(Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), BodyBytes: len(body)})
	rw := &recorder{ResponseWriter: w, onStatus: func(code int) { rec(func(q *Request) { q.Status = code }) }}
	if err != nil {
		writeJSON(rw, http.StatusBadRequest, map[string]any{"message": "kongfake: read body: " + err.Error()})
		return
	}
	if int64(len(body)) > s.opts.MaxBodyBytes {
		writeJSON(rw, http.StatusRequestEntityTooLarge, map[string]any{"message": "request body too large"})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	m, verr := s.spec.validate(r)
	if verr != nil {
		s.tb.Errorf("kongfake: Kong's Admin API description does not allow this request: %v", verr)
		writeJSON(rw, http.StatusBadRequest, map[string]any{"message": "kongfake: " + verr.Error()})
		return
	}
	for name, want := range s.opts.RequireHeaders {
		if !slices.Equal(r.Header.Values(name), want) {
			writeJSON(rw, http.StatusUnauthorized, map[string]any{"message": "Invalid credentials. Token or User credentials required"})
			return
		}
	}
	s.mu.Lock()
	f := s.takeFault(r)
	dbless := s.dbless
	s.mu.Unlock()
	if f != nil {
		fault := func(q *Request) { q.Fault = true }
		answers := f.Drop || f.Status != 0
		if answers {
			rec(fault) // before the fault plays: a drop may end the handler with a panic
		}
		if s.applyFault(rw, r, f) {
			if !answers {
				rec(fault) // a delay the client gave up on
			}
			return
		}
	}
	if dbless && isWrite(r.Method) {
		rec(func(q *Request) { q.Fault = true })
		writeJSON(rw, http.StatusMethodNotAllowed, map[string]any{"message": "cannot " + verb(r.Method) + " entities when not using a database"})
		return
	}

	var doc map[string]any
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&doc); err != nil || dec.More() {
			writeJSON(rw, http.StatusBadRequest, map[string]any{"message": "Cannot parse JSON body"})
			return
		}
	}
	status, out, kerr := s.handle(r, m, doc, recLocked)
	if kerr != nil {
		if kerr.schema && !s.opts.AllowSchemaViolations {
			s.tb.Errorf("kongfake: Kong refuses %s %s: %s", r.Method, r.URL.Path, kerr.msg)
		}
		writeJSON(rw, kerr.status, kerr.body())
		return
	}
	if out == nil {
		rw.WriteHeader(status)
		return
	}
	writeJSON(rw, status, out)
}

func verb(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodDelete:
		return "delete"
	}
	return "update"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"message":"kongfake: encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// record appends a request to the log and returns how to update it later (a no-op once the log
// was reset), and how to find it while holding s.mu (nil once reset).
func (s *Server) record(req Request) (update func(func(*Request)), locked func() *Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx, gen := len(s.requests), s.generation
	s.requests = append(s.requests, req)
	locked = func() *Request {
		if s.generation == gen && idx < len(s.requests) {
			return &s.requests[idx]
		}
		return nil
	}
	update = func(fn func(*Request)) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if q := locked(); q != nil {
			fn(q)
		}
	}
	return update, locked
}

// recorder reports the status before it is written, and still lets a fault hijack the connection.
type recorder struct {
	http.ResponseWriter
	status   int
	onStatus func(int)
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		r.onStatus(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("kongfake: connection cannot be hijacked")
	}
	return hj.Hijack()
}

// now is Kong's timestamp: Unix seconds.
func now() int64 { return time.Now().Unix() }
