package kongfake

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Fault is a misbehaviour injected into matching requests. The filters combine (all must match);
// the effects apply in order: Delay, then Drop or Status.
type Fault struct {
	Method     string // only requests with this method; "" for any
	Path       string // only paths starting with this prefix, e.g. "/plugins"; "" for any
	WritesOnly bool   // only POST, PUT, PATCH and DELETE

	Delay      time.Duration // wait before answering; a request the client gives up on stops waiting
	Drop       bool          // close the connection without answering (after Delay)
	Status     int           // answer this status with a Kong-style error body; 0 to answer normally
	RetryAfter string        // the Retry-After header sent with Status, e.g. "2"

	Times int // how many requests it hits before it is spent; 0 for every one until removed
	// Probability hits only this share of the matching requests (0 < p < 1), at
	// random, the others pass on to the next fault or to Kong; 0 hits every one.
	Probability float64
}

// fault is an injected Fault and what is left of it.
type fault struct {
	Fault
	left int // remaining hits when Times > 0
	id   int
}

func (f *fault) matches(r *http.Request) bool {
	if f.Method != "" && f.Method != r.Method {
		return false
	}
	if f.Path != "" && !strings.HasPrefix(r.URL.Path, f.Path) {
		return false
	}
	return !f.WritesOnly || isWrite(r.Method)
}

func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// Inject adds a fault; it applies to matching requests until spent or until remove is called.
// Faults are tried in the order injected; the first that matches a request applies.
func (s *Server) Inject(f Fault) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextFault++
	id := s.nextFault
	s.faults = append(s.faults, &fault{Fault: f, left: f.Times, id: id})
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.faults {
			if x.id == id {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
				return
			}
		}
	}
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns the first fault matching r, counting the hit. Callers hold s.mu.
func (s *Server) takeFault(r *http.Request) *Fault {
	for i, f := range s.faults {
		if !f.matches(r) || f.Probability > 0 && rand.Float64() >= f.Probability {
			continue
		}
		out := f.Fault
		if f.Times > 0 {
			if f.left--; f.left == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return &out
	}
	return nil
}

// applyFault plays a fault's effects; it reports whether the request was answered (or dropped).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true // the client gave up; nobody reads an answer
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or no hijacker: abort the stream instead
	}
	if f.Status != 0 {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, map[string]any{"message": "kongfake: injected " + http.StatusText(f.Status)})
		return true
	}
	return false
}
