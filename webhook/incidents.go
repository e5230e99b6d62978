package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/schemas"
)

// publisher is the one JetStream call the webhook needs.
type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

var _ publisher = (jetstream.JetStream)(nil)

// Accepted is the 202 answer: the incident is stored at Seq in the stream.
type Accepted struct {
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

type incidents struct {
	pub            publisher
	connected      func() bool
	subject        string
	publishTimeout time.Duration
	retryAfter     string
	log            zerolog.Logger
	m              *metrics
	now            func() time.Time
	// standIns, when set, replaces the placeholders stored for refused tokens (tests).
	standIns func(schemas.Entity) []schemas.Entity
}

func (h *incidents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !requireJSON(w, r) {
		h.m.requests.WithLabelValues("unsupported_media_type").Inc()
		return
	}
	body := Body(r)
	inc, err := schemas.ParseIncident(body)
	if err != nil {
		h.m.requests.WithLabelValues("invalid").Inc()
		var violations []schemas.Violation
		if ve, ok := errors.AsType[*schemas.ValidationError](err); ok {
			violations = ve.Violations
		}
		writeProblem(w, http.StatusBadRequest, "invalid-incident", "Invalid incident",
			"the incident does not match the contract; see violations", violations)
		return
	}
	// Deduplicated on the body as received, stored without its secrets.
	stored, err := storableBody(body, inc, h.standIns)
	if err != nil {
		h.unstorable(w, inc.ID, err)
		return
	}
	ack, err := h.store(r.Context(), h.subject, stored, MsgID(inc, body), schemas.SourceWebhook, "")
	if err != nil {
		h.m.requests.WithLabelValues("unavailable").Inc()
		h.unavailable(w, inc.ID, err)
		return
	}
	outcome := "accepted"
	if ack.Duplicate {
		outcome = "duplicate"
	}
	h.m.requests.WithLabelValues(outcome).Inc()
	h.log.Info().Str("incident", inc.ID).Str("type", string(inc.EffectiveType())).
		Int("entities", len(inc.Entities)).Uint64("seq", ack.Sequence).Bool("duplicate", ack.Duplicate).
		Msg("incident stored")
	writeJSON(w, http.StatusAccepted, Accepted{ID: inc.ID, Seq: ack.Sequence, Duplicate: ack.Duplicate})
}

// requireJSON answers 415 unless the request says its body is JSON.
func requireJSON(w http.ResponseWriter, r *http.Request) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeProblem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type",
			"the body must be JSON, sent with Content-Type: application/json", nil)
		return false
	}
	return true
}

// store publishes an incident and waits for JetStream to acknowledge it.
func (h *incidents) store(ctx context.Context, subject string, body []byte, msgID string, src schemas.Source, actor string) (*jetstream.PubAck, error) {
	if h.connected != nil && !h.connected() {
		return nil, errors.New("not connected to NATS")
	}
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set(schemas.HeaderSource, string(src))
	msg.Header.Set(schemas.HeaderReceivedAt, h.now().UTC().Format(time.RFC3339Nano))
	if actor != "" {
		msg.Header.Set(schemas.HeaderActor, actor)
	}
	ctx, cancel := context.WithTimeout(ctx, h.publishTimeout)
	defer cancel()
	start := time.Now()
	ack, err := h.pub.PublishMsg(ctx, msg)
	h.m.publish.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("store incident: %w", err)
	}
	return ack, nil
}

// unstorable answers an incident that cannot be stored without a secret it
// carries: 422 naming the entity and the consumer's reason for refusing it.
// Every refusal the consumer makes of a token has a stored stand-in (see
// storedForm), so this is a safety net. Nothing is stored.
func (h *incidents) unstorable(w http.ResponseWriter, id string, err error) {
	if r, ok := errors.AsType[*entityRefusal](err); ok {
		h.m.requests.WithLabelValues("invalid").Inc()
		path := "/entities/" + strconv.Itoa(r.index) + "/value"
		h.log.Warn().Str("incident", id).Str("path", path).Str("reason", r.err.Error()).Msg("incident refused: a secret with no stored form")
		writeProblem(w, http.StatusUnprocessableEntity, "refused", "Refused: a secret cannot be stored",
			"an entity carries a secret that cannot be stored without it, and the consumer would refuse it: "+r.err.Error(),
			[]schemas.Violation{{Path: path, Message: r.err.Error()}})
		return
	}
	h.m.requests.WithLabelValues("internal").Inc()
	h.log.Error().Err(err).Str("incident", id).Msg("incident not stored: could not replace its secrets")
	writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "could not replace the incident's secrets by their hashes", nil)
}

// unavailable answers 503: the incident was not stored, the sender must retry.
func (h *incidents) unavailable(w http.ResponseWriter, id string, err error) {
	h.log.Warn().Err(err).Str("incident", id).Msg("incident not stored")
	w.Header().Set("Retry-After", h.retryAfter)
	writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Storage unavailable",
		"the incident was not stored because JetStream did not acknowledge it; retry later", nil)
}

// MsgID is the JetStream deduplication id of an incident: a digest of its
// id, its type and its exact body, so a webhook retry of the same delivery
// is stored once while a changed incident with the same id is a new event.
func MsgID(inc *schemas.Incident, body []byte) string {
	h := sha256.New()
	h.Write([]byte(inc.EffectiveType()))
	h.Write([]byte{0})
	h.Write([]byte(inc.ID))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}
