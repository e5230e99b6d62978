package webhook

import (
	"encoding/json"
	"net/http"

	"github.com/blockwire/blockwire/schemas"
)

// problem is an RFC 9457 problem document. Every error this API answers is
// one, so a client (or Noname's webhook log) always sees what was wrong.
type problem struct {
	Type       string              `json:"type"`
	Title      string              `json:"title"`
	Status     int                 `json:"status"`
	Detail     string              `json:"detail,omitempty"`
	Violations []schemas.Violation `json:"violations,omitempty"`
}

// Problem type URIs: stable identifiers a client can switch on.
const (
	problemBase = "https://blockwire.dev/problems/"
)

func writeProblem(w http.ResponseWriter, status int, kind, title, detail string, violations []schemas.Violation) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{
		Type:       problemBase + kind,
		Title:      title,
		Status:     status,
		Detail:     detail,
		Violations: violations,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
