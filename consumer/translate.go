package consumer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/blockwire/blockwire/schemas"
)

// Reasons a guardrail or the translation refuses an entity; they are the
// audit record's detail prefix and the label of the refused metric.
const (
	ReasonInvalid      = "invalid"        // the entity cannot be canonicalised
	ReasonNeverBlock   = "never_block"    // on the never-block list
	ReasonRangeTooWide = "range_too_wide" // shorter prefix than the minimum
	ReasonTooLong      = "too_long"       // duration above the maximum
	ReasonCeiling      = "ceiling"        // the bucket holds the most active blocks allowed
	ReasonNotBlocked   = "not_blocked"    // unblock of something not blocked
	ReasonSuperseded   = "superseded"     // a later incident already decided this key
	ReasonNotJWT       = "not_jwt"        // a jwt entity whose value is not a token
	ReasonNoClaim      = "no_claim"       // the token lacks the named claim
)

// refusal is an entity the pipeline will not apply, and why.
type refusal struct {
	reason string
	detail string
}

func (r *refusal) Error() string { return r.reason + ": " + r.detail }

// Is makes every refusal match ErrRefused.
func (r *refusal) Is(target error) bool { return target == ErrRefused }

// ErrRefused is wrapped by every guardrail refusal.
var ErrRefused = errors.New("refused by a guardrail")

func refuse(reason, format string, a ...any) error {
	return &refusal{reason: reason, detail: fmt.Sprintf(format, a...)}
}

// target is one canonical block: its key and the identifying part of its
// value. The same attacker always yields the same target.
type target struct {
	key   string
	parts schemas.KeyParts
	// block carries kind, name, value or valueSha256 and scope.
	block schemas.Block
}

// translate canonicalises an entity so the same attacker is one key:
// IPv4-mapped addresses unmapped, ranges masked, header names lower-cased,
// secrets (header, cookie and query values, whole tokens) hashed.
func translate(e schemas.Entity, scope *schemas.Scope) (target, error) {
	parts := schemas.KeyParts{Kind: e.Type}
	if scope != nil {
		parts.Service, parts.Route = scope.Service, scope.Route
	}
	b := schemas.Block{Kind: e.Type}
	if scope != nil && (scope.Service != "" || scope.Route != "") {
		b.Scope = &schemas.Scope{Service: scope.Service, Route: scope.Route}
	}
	switch e.Type {
	case schemas.EntityIP, schemas.EntityCIDR:
		v, err := schemas.CanonicalValue(e.Type, e.Value)
		if err != nil {
			return target{}, refuse(ReasonInvalid, "%v", err)
		}
		parts.Value, b.Value = v, v
	case schemas.EntityHeader, schemas.EntityCookie, schemas.EntityQuery:
		name := e.Name
		if e.Type == schemas.EntityHeader {
			name = strings.ToLower(name) // HTTP header names are case-insensitive; Kong lower-cases them
		}
		if name == "" {
			return target{}, refuse(ReasonInvalid, "%s entity without a name", e.Type)
		}
		h := secretHash(e)
		parts.Name, parts.Value = name, h
		b.Name, b.ValueSHA256 = name, h
	case schemas.EntityJWT:
		if e.Claim == "" {
			if e.ValueSHA256 == "" && !looksLikeJWT(e.Value) {
				return target{}, refuse(ReasonNotJWT, "value is not a compact JWT")
			}
			h := secretHash(e)
			parts.Value, b.ValueSHA256 = h, h
			break
		}
		v, err := claimValue(e.Value, e.Claim)
		if err != nil {
			return target{}, err
		}
		parts.Name, parts.Value = e.Claim, v
		b.Name, b.Value = e.Claim, v
	case schemas.EntityConsumer:
		parts.Value, b.Value = e.Value, e.Value
	default:
		return target{}, refuse(ReasonInvalid, "unknown entity type %q", e.Type)
	}
	key, err := schemas.BlockKey(parts)
	if err != nil {
		return target{}, refuse(ReasonInvalid, "%v", err)
	}
	return target{key: key, parts: parts, block: b}, nil
}

// KeyFor returns the block key an entity maps to, canonicalised exactly as
// the pipeline does, so the CLI and the API can name a block.
func KeyFor(e schemas.Entity, scope *schemas.Scope) (string, error) {
	t, err := translate(e, scope)
	if err != nil {
		return "", err
	}
	return t.key, nil
}

// EntityFor is the inverse: the entity (secrets by hash) that names the
// block stored under key, for unblocking by key.
func EntityFor(key string) (schemas.Entity, *schemas.Scope, error) {
	p, err := schemas.ParseBlockKey(key)
	if err != nil {
		return schemas.Entity{}, nil, err
	}
	e := schemas.Entity{Type: p.Kind}
	switch {
	case p.Kind.HasName():
		e.Name, e.ValueSHA256 = p.Name, p.Value
	case p.Kind == schemas.EntityJWT && p.Name == "":
		e.ValueSHA256 = p.Value
	case p.Kind == schemas.EntityJWT:
		e.Claim, e.Value = p.Name, p.Value
	default:
		e.Value = p.Value
	}
	var scope *schemas.Scope
	if p.Service != "" || p.Route != "" {
		scope = &schemas.Scope{Service: p.Service, Route: p.Route}
	}
	return e, scope, nil
}

// ClaimValue is the value a jwt entity with a claim is blocked on, read
// exactly as the pipeline reads it: the claim's value when value is a token,
// else value itself. Its error is the refusal the pipeline records for that
// entity (wrapping ErrRefused). The webhook uses it to store the claim's
// value instead of the token.
func ClaimValue(value, claim string) (string, error) {
	return claimValue(value, claim)
}

// claimValue returns the value a jwt-by-claim block matches: when value is a
// token, its claim is read (without verifying the signature: the token is
// evidence from Noname, not a credential we trust); otherwise value already
// is the claim's value.
func claimValue(value, claim string) (string, error) {
	if !looksLikeJWT(value) {
		return value, nil
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(value, claims); err != nil {
		return "", refuse(ReasonNotJWT, "cannot read the token's claims (not base64url JSON, or an unknown algorithm)")
	}
	v, ok := claims[claim]
	if !ok {
		return "", refuse(ReasonNoClaim, "the token has no %q claim", claim)
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			return "", refuse(ReasonNoClaim, "the token's %q claim is empty", claim)
		}
		// Stored under a key, such a value would be read as a token again when the key is
		// turned back into an entity (EntityFor): unblocking by key would name another block.
		if looksLikeJWT(v) {
			return "", refuse(ReasonInvalid, "the token's %q claim holds a token itself; block the whole token instead", claim)
		}
		return v, nil
	case float64:
		return fmt.Sprint(v), nil
	default:
		return "", refuse(ReasonNoClaim, "the token's %q claim is not a string or number", claim)
	}
}

// looksLikeJWT: three base64url segments, the first decoding to a JSON object.
func looksLikeJWT(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	p := jwt.NewParser()
	hdr, err := p.DecodeSegment(parts[0])
	return err == nil && len(hdr) > 1 && hdr[0] == '{'
}

// secretHash is the stored form of a secret: the hash the sender gave, or
// the hash of the value.
func secretHash(e schemas.Entity) string {
	if e.ValueSHA256 != "" {
		return e.ValueSHA256
	}
	return sha256Hex(e.Value)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// addrOf returns the address or range a target blocks, for the guardrails.
func (t target) prefix() (netip.Prefix, bool) {
	switch t.parts.Kind {
	case schemas.EntityIP:
		a, err := netip.ParseAddr(t.parts.Value)
		if err != nil {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(a, a.BitLen()), true
	case schemas.EntityCIDR:
		p, err := netip.ParsePrefix(t.parts.Value)
		return p, err == nil
	}
	return netip.Prefix{}, false
}
