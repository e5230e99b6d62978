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
	ReasonNotJWT       = "not_jwt"        // a jwt entity whose value is not a token
	ReasonNoClaim      = "no_claim"       // the token lacks the named claim
)

// refusal is an entity the pipeline will not apply, and why.
type refusal struct {
	reason string
	detail string
}

func (r *refusal) Error() string { return r.reason + ": " + r.detail }

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
		h := sha256Hex(e.Value)
		parts.Name, parts.Value = name, h
		b.Name, b.ValueSHA256 = name, h
	case schemas.EntityJWT:
		if e.Claim == "" {
			if !looksLikeJWT(e.Value) {
				return target{}, refuse(ReasonNotJWT, "value is not a compact JWT")
			}
			h := sha256Hex(e.Value)
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
		return "", refuse(ReasonNotJWT, "cannot read the token's claims: %v", errors.Unwrap(err))
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
