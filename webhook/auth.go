package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
)

// Header names of the signature scheme (see SignatureForm for what is signed).
const (
	HeaderSignature = "X-Blockwire-Signature"
	HeaderTimestamp = "X-Blockwire-Timestamp"
	// MinSecretLength refuses tokens and secrets short enough to guess.
	MinSecretLength = 16
)

// ErrUnauthenticated is wrapped by every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// errTooLarge is wrapped by the body read errors answered 413.
var errTooLarge = errors.New("request body too large")

// The challenges of a 401 (RFC 9110 WWW-Authenticate), one per configured
// scheme.
const (
	bearerChallenge = `Bearer realm="blockwire"`
	hmacChallenge   = `Blockwire-HMAC-SHA256 realm="blockwire"`
)

// SignatureForm is what an HMAC signature of a route covers.
type SignatureForm int

const (
	// BodySignature: HMAC-SHA256(secret, timestamp + "." + body) (Sign). Only
	// POST /v1/incidents: the webhook senders' contract.
	BodySignature SignatureForm = iota
	// RequestSignature: HMAC-SHA256(secret, timestamp + "." + METHOD + " " +
	// request-target + "." + body) (SignRequest), the request-target being
	// the path and ?query as sent. Every other route: a signature of one
	// request (an empty-bodied GET /v1/blocks) is then not one of another
	// (DELETE /v1/blocks/{any key}). An incident body is JSON, which never
	// starts with an upper-case letter, and a signed method always does, so
	// a signature of one form is never valid in the other.
	RequestSignature
)

// AuthConfig configures request authentication. When both tokens and HMAC
// secrets are set, a request must carry both a valid token and a valid
// signature.
type AuthConfig struct {
	// Tokens are the accepted bearer tokens (several, so one can be rotated
	// without downtime). Empty: no bearer token is required.
	Tokens []string
	// HMACSecrets are the accepted signing secrets. Empty: no signature is required.
	HMACSecrets []string
	// MaxSkew bounds the age of a signed request's timestamp, either way.
	// Default 5 minutes. A timestamp is then accepted for 2×MaxSkew, so
	// MaxSkew must be at most half of DuplicateWindow (CheckMaxSkew): a
	// signed manual action replayed while its timestamp is accepted is then
	// recognised as a duplicate and stored once.
	MaxSkew time.Duration
	// DuplicateWindow is the incident stream's duplicate window
	// (broker.Names.DuplicateWindow). Default broker.DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// MaxBodyBytes bounds the request body; larger bodies get 413. Default 1 MiB.
	MaxBodyBytes int64
	// AllowUnauthenticated accepts requests with no credentials at all. Only
	// for a local demo; New logs a warning when it is set.
	AllowUnauthenticated bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Authenticator checks credentials and buffers the body, so handlers behind
// it only ever see authenticated, size-bounded requests.
type Authenticator struct {
	tokenHashes [][sha256.Size]byte
	secrets     [][]byte
	maxSkew     time.Duration
	maxBody     int64
	open        bool
	now         func() time.Time
}

// NewAuthenticator validates cfg and returns an Authenticator.
func NewAuthenticator(cfg AuthConfig, log zerolog.Logger) (*Authenticator, error) {
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = 5 * time.Minute
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSkew < 0 || cfg.MaxBodyBytes < 0 {
		return nil, errors.New("configure authentication: max skew and max body must not be negative")
	}
	if err := CheckMaxSkew(cfg.MaxSkew, cfg.DuplicateWindow); err != nil {
		return nil, err
	}
	a := &Authenticator{maxSkew: cfg.MaxSkew, maxBody: cfg.MaxBodyBytes, now: cfg.Now}
	for i, t := range cfg.Tokens {
		if len(t) < MinSecretLength {
			return nil, fmt.Errorf("configure authentication: token %d is shorter than %d characters", i+1, MinSecretLength)
		}
		// Only hashes are kept: comparing fixed-size digests in constant time
		// also hides the token's length.
		a.tokenHashes = append(a.tokenHashes, sha256.Sum256([]byte(t)))
	}
	for i, s := range cfg.HMACSecrets {
		if len(s) < MinSecretLength {
			return nil, fmt.Errorf("configure authentication: HMAC secret %d is shorter than %d characters", i+1, MinSecretLength)
		}
		a.secrets = append(a.secrets, []byte(s))
	}
	if len(a.tokenHashes) == 0 && len(a.secrets) == 0 {
		if !cfg.AllowUnauthenticated {
			return nil, errors.New("configure authentication: no webhook token or HMAC secret configured; set --webhook-token or --webhook-hmac-secret (or --insecure-demo for a local demo)")
		}
		a.open = true
		log.Warn().Msg("AUTHENTICATION IS OFF: anyone who can reach this port can block traffic; use only for a local demo")
	}
	return a, nil
}

// CheckMaxSkew refuses a max skew (zero: the default 5 minutes) larger than
// half the incident stream's duplicate window (zero: the default 10
// minutes). A signed timestamp is accepted from MaxSkew before to MaxSkew
// after the server clock, 2×MaxSkew in all; a manual action's incident id is
// derived from its signature, so a replay within that time must fall within
// the duplicate window to be recognised and stored once.
func CheckMaxSkew(maxSkew, duplicateWindow time.Duration) error {
	if maxSkew == 0 {
		maxSkew = 5 * time.Minute
	}
	if duplicateWindow == 0 {
		duplicateWindow = broker.DefaultDuplicateWindow
	}
	if maxSkew > duplicateWindow/2 {
		return fmt.Errorf("configure authentication: --webhook-max-skew %s is more than half the incident stream's duplicate window %s: a signed manual action replayed after the window would be stored again", maxSkew, duplicateWindow)
	}
	return nil
}

// bearer extracts the token of an Authorization header; the scheme is
// case-insensitive (RFC 9110).
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

type (
	bodyKey      struct{}
	signatureKey struct{}
)

// Body returns the request body buffered by Wrap.
func Body(r *http.Request) []byte {
	b, _ := r.Context().Value(bodyKey{}).([]byte)
	return b
}

// verifiedSignature returns the HMAC that Wrap verified, nil when the
// request needed no signature.
func verifiedSignature(r *http.Request) []byte {
	b, _ := r.Context().Value(signatureKey{}).([]byte)
	return b
}

// Wrap authenticates each request before next sees it: cheap header checks
// first (so an unauthenticated caller cannot make us read a megabyte), then
// the bounded body, then the signature over it in the given form. onFail
// learns each refusal: its outcome (unauthorized, too_large, bad_body) and
// why, a reason that never holds a credential.
func (a *Authenticator) Wrap(next http.Handler, form SignatureForm, onFail func(r *http.Request, outcome string, reason error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.checkHeaders(r); err != nil {
			onFail(r, "unauthorized", err)
			a.unauthorized(w, err)
			return
		}
		body, err := a.readBody(w, r)
		switch {
		case errors.Is(err, errTooLarge):
			onFail(r, "too_large", err)
			writeProblem(w, http.StatusRequestEntityTooLarge, "too-large", "Request body too large", err.Error(), nil)
			return
		case err != nil: // a broken chunked encoding, a connection lost or too slow mid-body
			onFail(r, "bad_body", err)
			writeProblem(w, http.StatusBadRequest, "bad-body", "Unreadable request body",
				"the request body could not be read: "+err.Error(), nil)
			return
		}
		sig, err := a.checkSignature(r, body, form)
		if err != nil {
			onFail(r, "unauthorized", err)
			a.unauthorized(w, err)
			return
		}
		ctx := context.WithValue(r.Context(), bodyKey{}, body)
		if sig != nil {
			ctx = context.WithValue(ctx, signatureKey{}, sig)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// unauthorized answers 401 with a challenge for each configured scheme: a
// bearer token, an HMAC signature, or both when a request needs both.
func (a *Authenticator) unauthorized(w http.ResponseWriter, err error) {
	if len(a.tokenHashes) > 0 {
		w.Header().Add("WWW-Authenticate", bearerChallenge)
	}
	if len(a.secrets) > 0 {
		w.Header().Add("WWW-Authenticate", hmacChallenge)
	}
	writeProblem(w, http.StatusUnauthorized, "unauthorized", "Unauthorized", err.Error(), nil)
}

func (a *Authenticator) checkHeaders(r *http.Request) error {
	if a.open {
		return nil
	}
	if len(a.tokenHashes) > 0 {
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			return fmt.Errorf("%w: missing bearer token (Authorization: Bearer <token>)", ErrUnauthenticated)
		}
		got := sha256.Sum256([]byte(token))
		match := 0
		for i := range a.tokenHashes { // no early exit: time does not depend on which token matched
			match |= subtle.ConstantTimeCompare(got[:], a.tokenHashes[i][:])
		}
		if match != 1 {
			return fmt.Errorf("%w: invalid bearer token", ErrUnauthenticated)
		}
	}
	if len(a.secrets) > 0 {
		ts := r.Header.Get(HeaderTimestamp)
		if ts == "" || r.Header.Get(HeaderSignature) == "" {
			return fmt.Errorf("%w: missing %s or %s header", ErrUnauthenticated, HeaderSignature, HeaderTimestamp)
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: %s must be Unix seconds", ErrUnauthenticated, HeaderTimestamp)
		}
		skew := a.now().Sub(time.Unix(sec, 0))
		if skew > a.maxSkew || skew < -a.maxSkew {
			return fmt.Errorf("%w: %s is more than %s away from the server clock", ErrUnauthenticated, HeaderTimestamp, a.maxSkew)
		}
	}
	return nil
}

func (a *Authenticator) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooLarge := fmt.Errorf("%w: the body exceeds %d bytes", errTooLarge, a.maxBody)
	if r.ContentLength > a.maxBody {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		return nil, fmt.Errorf("read body: %w", err)
	}
	return body, nil
}

// checkSignature returns the verified HMAC, nil when no secret is configured.
func (a *Authenticator) checkSignature(r *http.Request, body []byte, form SignatureForm) ([]byte, error) {
	if len(a.secrets) == 0 {
		return nil, nil
	}
	sig := r.Header.Get(HeaderSignature)
	sig = strings.TrimPrefix(sig, "sha256=")
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return nil, fmt.Errorf("%w: %s must be sha256=<64 hex digits>", ErrUnauthenticated, HeaderSignature)
	}
	ts := r.Header.Get(HeaderTimestamp)
	target := r.URL.RequestURI()
	match := 0
	for _, secret := range a.secrets {
		want := Sign(secret, ts, body)
		if form == RequestSignature {
			want = SignRequest(secret, ts, r.Method, target, body)
		}
		match |= subtle.ConstantTimeCompare(got, want)
	}
	if match != 1 {
		if form == RequestSignature {
			return nil, fmt.Errorf("%w: signature does not match (this route signs timestamp.METHOD request-target.body)", ErrUnauthenticated)
		}
		return nil, fmt.Errorf("%w: signature does not match", ErrUnauthenticated)
	}
	return got, nil
}

// Sign computes the signature a webhook sender puts in HeaderSignature for
// POST /v1/incidents (hex encoded, optionally prefixed "sha256="):
// HMAC-SHA256(secret, timestamp + "." + body).
func Sign(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SignRequest computes the signature of a request to every route but
// POST /v1/incidents (the manual API, the audit trail):
// HMAC-SHA256(secret, timestamp + "." + method + " " + target + "." + body),
// target being the request-target as sent: the path and, when there is one,
// "?" and the query (url.URL.RequestURI).
func SignRequest(secret []byte, timestamp, method, target string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write([]byte(method))
	m.Write([]byte{' '})
	m.Write([]byte(target))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
