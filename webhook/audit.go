package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/schemas"
)

// auditReader reads the audit trail from a point.
type auditReader interface {
	Audit(ctx context.Context, since time.Time, afterSeq uint64, limit int, emit func(replay.Event) error) (uint64, error)
}

var _ auditReader = (*replay.Reader)(nil)

const (
	defaultAuditLimit = 1000
	maxAuditLimit     = 100000
)

// auditStream answers GET /v1/audit?since=RFC3339|after_seq=N&limit=N with
// JSON lines, one audit record each with its stream sequence: a SIEM pulls
// with after_seq set to the last sequence it has.
func auditStream(r auditReader, log func(error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		var (
			since    time.Time
			afterSeq uint64
			limit    = defaultAuditLimit
			bad      []schemas.Violation
		)
		if s := q.Get("since"); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				bad = append(bad, schemas.Violation{Path: "since", Message: "must be an RFC 3339 time, e.g. 2026-11-25T10:00:00Z"})
			}
			since = t
		}
		if s := q.Get("after_seq"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				bad = append(bad, schemas.Violation{Path: "after_seq", Message: "must be a non-negative integer"})
			}
			afterSeq = n
		}
		if n, v := queryLimit(q, limit, maxAuditLimit); v != nil {
			bad = append(bad, *v)
		} else {
			limit = n
		}
		if len(bad) > 0 {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid query", "see violations", bad)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		enc := json.NewEncoder(w)
		wrote := false
		_, err := r.Audit(req.Context(), since, afterSeq, limit, func(ev replay.Event) error {
			wrote = true
			return enc.Encode(ev)
		})
		if err != nil {
			log(err)
			if !wrote { // nothing sent yet: a clean error is still possible
				writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Audit trail unavailable", "could not read the audit stream; retry later", nil)
			}
		}
	}
}
