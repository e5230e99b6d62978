package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// blockLister lists the active blocks.
type blockLister interface {
	List(ctx context.Context, kind schemas.EntityType, limit int) ([]consumer.ActiveBlock, bool, error)
}

var _ blockLister = (*consumer.Lister)(nil)

// BlocksConfig enables the manual blocking API: GET and POST /v1/blocks,
// DELETE /v1/blocks/{key}. Manual actions travel through the incident stream
// like any incident, so they are in the log and the audit trail.
type BlocksConfig struct {
	// Lister reads the active blocks. Required.
	Lister blockLister
	// Preflight applies the guardrails before anything is stored, so a
	// refused block is answered 422 at once, and returns the block key
	// (consumer.Guardrails.Preflight). Required.
	Preflight func(e schemas.Entity, scope *schemas.Scope, durationSeconds *int64) (string, error)
	// Subject manual incidents are published to. Default "noname.incidents.manual".
	Subject string
}

// BlockRequest is the body of POST /v1/blocks: one entity to block.
type BlockRequest struct {
	Kind            schemas.EntityType `json:"kind"`
	Value           string             `json:"value,omitempty"`
	ValueSHA256     string             `json:"valueSha256,omitempty"`
	Name            string             `json:"name,omitempty"`
	Claim           string             `json:"claim,omitempty"`
	DurationSeconds *int64             `json:"durationSeconds,omitempty"`
	Reason          string             `json:"reason,omitempty"`
	Scope           *schemas.Scope     `json:"scope,omitempty"`
	// Actor names who asked (an operator's login); it becomes the actor of
	// the audit records.
	Actor string `json:"actor,omitempty"`
}

// ManualAccepted answers a manual block or unblock: the incident stored, and
// the key of the block it acts on.
type ManualAccepted struct {
	Accepted
	Key string `json:"key"`
}

// BlockList answers GET /v1/blocks.
type BlockList struct {
	Blocks    []consumer.ActiveBlock `json:"blocks"`
	Count     int                    `json:"count"`
	Truncated bool                   `json:"truncated"`
}

const (
	defaultListLimit = 100
	maxListLimit     = 10000
	maxActorLength   = 128
)

type blocks struct {
	inc *incidents
	cfg BlocksConfig
}

func (b *blocks) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind := schemas.EntityType(q.Get("kind"))
	if kind != "" && !kind.Valid() {
		writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid query", fmt.Sprintf("unknown kind %q", kind),
			[]schemas.Violation{{Path: "kind", Message: "must be one of: ip, cidr, header, cookie, query, jwt, consumer"}})
		return
	}
	limit, v := queryLimit(q, defaultListLimit, maxListLimit)
	if v != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid query", "bad limit", []schemas.Violation{*v})
		return
	}
	list, truncated, err := b.cfg.Lister.List(r.Context(), kind, limit)
	if err != nil {
		b.inc.log.Warn().Err(err).Msg("list blocks")
		w.Header().Set("Retry-After", b.inc.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Blocks unavailable", "could not read the blocks bucket; retry later", nil)
		return
	}
	if list == nil {
		list = []consumer.ActiveBlock{}
	}
	writeJSON(w, http.StatusOK, BlockList{Blocks: list, Count: len(list), Truncated: truncated})
}

func (b *blocks) create(w http.ResponseWriter, r *http.Request) {
	if !requireJSON(w, r) {
		return
	}
	if !utf8.Valid(Body(r)) { // encoding/json would quietly turn the bad bytes into U+FFFD
		writeProblem(w, http.StatusBadRequest, "invalid-block", "Invalid block request", "the body is not valid UTF-8",
			[]schemas.Violation{{Path: "/", Message: "must be valid UTF-8"}})
		return
	}
	var req BlockRequest
	dec := json.NewDecoder(bytes.NewReader(Body(r)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		if err == nil {
			err = errors.New("trailing data after the JSON object")
		}
		writeProblem(w, http.StatusBadRequest, "invalid-block", "Invalid block request", "the body is not a block request",
			[]schemas.Violation{{Path: "/", Message: err.Error()}})
		return
	}
	if bad := checkActor(req.Actor); bad != "" {
		writeProblem(w, http.StatusBadRequest, "invalid-block", "Invalid block request", bad,
			[]schemas.Violation{{Path: "/actor", Message: bad}})
		return
	}
	e := schemas.Entity{Type: req.Kind, Value: req.Value, ValueSHA256: req.ValueSHA256, Name: req.Name, Claim: req.Claim}
	inc := schemas.Incident{ID: manualID("manual", r), Type: schemas.TypeBlock, Title: req.Reason, Severity: schemas.SeverityHigh,
		Entities: []schemas.Entity{e}, DurationSeconds: req.DurationSeconds, Scope: req.Scope}
	b.submit(w, r, inc, req.Actor)
}

func (b *blocks) remove(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	e, scope, err := consumer.EntityFor(key)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid block key", err.Error(),
			[]schemas.Violation{{Path: "key", Message: err.Error()}})
		return
	}
	if bad := checkKey(key, e, scope); bad != "" {
		writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid block key", bad,
			[]schemas.Violation{{Path: "key", Message: bad}})
		return
	}
	actor := r.URL.Query().Get("actor")
	if bad := checkActor(actor); bad != "" {
		writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid request", bad, []schemas.Violation{{Path: "actor", Message: bad}})
		return
	}
	inc := schemas.Incident{ID: manualID("manual-unblock", r), Type: schemas.TypeUnblock, Title: "manual unblock",
		Entities: []schemas.Entity{e}, Scope: scope}
	b.submit(w, r, inc, actor)
}

// submit validates a manual incident exactly as an incoming one, applies the
// guardrails, and stores it.
func (b *blocks) submit(w http.ResponseWriter, r *http.Request, inc schemas.Incident, actor string) {
	body, err := json.Marshal(inc)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "could not encode the incident", nil)
		return
	}
	if _, err := schemas.ParseIncident(body); err != nil {
		var vs []schemas.Violation
		if ve, ok := errors.AsType[*schemas.ValidationError](err); ok {
			vs = requestPaths(ve.Violations)
		}
		b.inc.m.manual.WithLabelValues("invalid").Inc()
		writeProblem(w, http.StatusBadRequest, "invalid-block", "Invalid block request", "see violations", vs)
		return
	}
	e := inc.Entities[0]
	var key string
	if inc.Type == schemas.TypeBlock {
		key, err = b.cfg.Preflight(e, inc.Scope, inc.DurationSeconds)
	} else {
		key, err = consumer.KeyFor(e, inc.Scope)
	}
	if err != nil {
		b.inc.m.manual.WithLabelValues("refused").Inc()
		writeProblem(w, http.StatusUnprocessableEntity, "refused", "Refused by a guardrail", err.Error(), nil)
		return
	}
	// Validated and keyed on the value as given; stored without the secret
	// (by hash, or a token by its claim's value), under the same key. The
	// guardrails answered any refusal above, so there is one.
	s, changed, err := storedForm(e, inc.Scope, &placeholderCache{})
	if err != nil {
		b.inc.m.manual.WithLabelValues("refused").Inc()
		writeProblem(w, http.StatusUnprocessableEntity, "refused", "Refused by a guardrail", err.Error(), nil)
		return
	}
	if changed {
		inc.Entities = []schemas.Entity{s}
		if body, err = json.Marshal(inc); err != nil {
			writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "could not encode the incident", nil)
			return
		}
	}
	ack, err := b.inc.store(r.Context(), b.cfg.Subject, body, inc.ID, schemas.SourceManual, actor)
	if err != nil {
		b.inc.m.manual.WithLabelValues("unavailable").Inc()
		b.inc.unavailable(w, inc.ID, err)
		return
	}
	b.inc.m.manual.WithLabelValues("accepted").Inc()
	b.inc.log.Info().Str("incident", inc.ID).Str("type", string(inc.Type)).Str("key", key).Str("actor", actor).
		Uint64("seq", ack.Sequence).Msg("manual action stored")
	writeJSON(w, http.StatusAccepted, ManualAccepted{Accepted: Accepted{ID: inc.ID, Seq: ack.Sequence, Duplicate: ack.Duplicate}, Key: key})
}

// HashSecret replaces the value of a secret (a header, cookie or query
// value, a whole token) by its SHA-256 in lowercase hex, the valueSha256 the
// contract accepts: the block key is the same (the consumer keys secrets by
// that hash), and the incident stream, kept for months, never holds the
// secret. It reports whether e was changed; other entities, and a jwt
// entity with a claim (matched on the claim's value), are left as they are.
func HashSecret(e schemas.Entity) (schemas.Entity, bool) {
	if e.Value == "" || !(e.Type.HasName() || e.Type == schemas.EntityJWT && e.Claim == "") {
		return e, false
	}
	sum := sha256.Sum256([]byte(e.Value))
	e.Value, e.ValueSHA256 = "", hex.EncodeToString(sum[:])
	return e, true
}

// requestPaths maps violations of the generated incident back to the
// fields of the block request, so the caller sees its own names.
func requestPaths(vs []schemas.Violation) []schemas.Violation {
	out := make([]schemas.Violation, len(vs))
	for i, v := range vs {
		p := v.Path
		switch {
		case p == "/entities/0/type":
			p = "/kind"
		case strings.HasPrefix(p, "/entities/0/"):
			p = strings.TrimPrefix(p, "/entities/0")
		case p == "/entities/0":
			p = "/"
		case p == "/title":
			p = "/reason"
		}
		out[i] = schemas.Violation{Path: p, Message: v.Message}
	}
	return out
}

// checkKey refuses a key that does not name exactly one block: a part that
// is not UTF-8 (the incident, JSON, would carry U+FFFD instead and unblock
// something else), or a key other than the canonical one of the entity it
// decodes to (the unblock would act on that other key).
func checkKey(key string, e schemas.Entity, scope *schemas.Scope) string {
	parts := []string{e.Value, e.ValueSHA256, e.Name, e.Claim}
	if scope != nil {
		parts = append(parts, scope.Service, scope.Route)
	}
	for _, p := range parts {
		if !utf8.ValidString(p) {
			return "a part of the key is not valid UTF-8"
		}
	}
	if canonical, err := consumer.KeyFor(e, scope); err == nil && canonical != key {
		return fmt.Sprintf("not a canonical block key: the block it names is stored under %q", canonical)
	}
	return "" // an entity the guardrails refuse is answered by submit
}

func checkActor(a string) string {
	if len(a) > maxActorLength {
		return fmt.Sprintf("actor is longer than %d bytes", maxActorLength)
	}
	for _, c := range a {
		if !unicode.IsPrint(c) {
			return "actor must be printable text"
		}
	}
	return ""
}

// manualID is a manual incident's id, also its Nats-Msg-Id. A signed
// request's id is derived from its verified signature, which covers the
// timestamp, the method, the target and the body: the same signed request
// replayed while its timestamp is accepted (2×MaxSkew, at most the
// duplicate window) is answered as a duplicate and stores nothing. A
// request with a bearer token only gets a random id.
func manualID(prefix string, r *http.Request) string {
	if sig := verifiedSignature(r); sig != nil {
		sum := sha256.Sum256(sig)
		return prefix + "-" + hex.EncodeToString(sum[:12])
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// queryLimit reads the limit query parameter: def when absent, else an integer from 1 to most; the
// violation says what was wrong.
func queryLimit(q url.Values, def, most int) (int, *schemas.Violation) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, &schemas.Violation{Path: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d", most)}
	}
	return n, nil
}
