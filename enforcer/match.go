package enforcer

import (
	"fmt"
	"net/netip"

	"github.com/blockwire/blockwire/schemas"
)

// maxHeaders is the most header lines Kong returns (kong.request.get_headers refuses more).
// A request with that many lines may have more, hidden past the limit.
const maxHeaders = 1000

// uniqueHeader is the one name a block may need that nginx refuses to see twice (a second
// Authorization line is answered 400 before any plugin runs): a copy of it found in a
// truncated list is the only one.
const uniqueHeader = "authorization"

// Reasons a request is refused, as they appear in response bodies, logs and metrics.
const (
	reasonBlocked        = "blocked"
	reasonTooManyHeaders = "too_many_headers"
	reasonNotSynced      = "not_synced"
	reasonInternal       = "internal_error"
	reasonMisconfigured  = "misconfigured"
)

// verdict is the outcome of matching one request.
type verdict struct {
	blocked bool
	kind    schemas.EntityType // what matched
	reason  string
}

func blockedBy(kind schemas.EntityType) verdict {
	return verdict{blocked: true, kind: kind, reason: reasonBlocked}
}

// candidate is a match on a key that has scoped blocks: it blocks only if the request's
// service or route is in scope, which costs a router call to learn.
type candidate struct {
	set  *scopeSet
	kind schemas.EntityType
}

// matcher evaluates one request against one index. It lives on the stack of the handler.
type matcher struct {
	x     *index
	p     *plan
	now   int64 // Unix ms, read once per request
	cands [4]candidate
	n     int         // candidates in cands
	more  []candidate // past the first four: rare, so it may allocate
}

// note records r's outcome for kind: true when r blocks outright.
func (m *matcher) note(r rule, kind schemas.EntityType) bool {
	if r.blocks(m.now) {
		return true
	}
	if r.candidates(m.now) {
		c := candidate{set: r.scoped, kind: kind}
		if m.n < len(m.cands) {
			m.cands[m.n] = c
			m.n++
		} else {
			m.more = append(m.more, c)
		}
	}
	return false
}

// evaluate matches the request, asking Kong only what the plan needs, in order of cost and
// likelihood: the address first, then headers (one call for every header-borne kind), the
// query string, the consumer, and the router only for scoped blocks that matched.
func (m *matcher) evaluate(r request, known scopeIDs) (verdict, error) {
	p := m.p
	if p.ip {
		s, err := r.ForwardedIP()
		if err != nil {
			return verdict{}, fmt.Errorf("get forwarded ip: %w", err)
		}
		checkTestPanic(s)
		if a, err := netip.ParseAddr(s); err == nil {
			if v, ok := m.matchAddr(a); ok {
				return v, nil
			}
		}
	}
	if p.needHeaders() {
		if v, err := m.matchHeaders(r); err != nil || v.blocked {
			return v, err
		}
	}
	if p.query.len() > 0 {
		raw, err := r.RawQuery()
		if err != nil {
			return verdict{}, fmt.Errorf("get raw query: %w", err)
		}
		if m.matchQuery(raw) {
			return blockedBy(schemas.EntityQuery), nil
		}
	}
	if p.consumer {
		id, username, err := r.Consumer()
		if err != nil {
			return verdict{}, fmt.Errorf("get consumer: %w", err)
		}
		if m.matchConsumer(id, username) {
			return blockedBy(schemas.EntityConsumer), nil
		}
	}
	if m.n > 0 {
		return m.matchScoped(r, known)
	}
	return verdict{}, nil
}

// matchAddr looks a up among exact addresses and ranges.
func (m *matcher) matchAddr(a netip.Addr) (verdict, bool) {
	a = a.Unmap().WithZone("")
	if r, ok := m.x.lookupAddr(a); ok && m.note(r, schemas.EntityIP) {
		return blockedBy(schemas.EntityIP), true
	}
	t := m.x.ranges.Load()
	r, ok := t.Lookup(a)
	if !ok {
		return verdict{}, false
	}
	if r.blocks(m.now) {
		return blockedBy(schemas.EntityCIDR), true
	}
	// The longest match is scoped or expired (and not swept yet): a shorter prefix may
	// still block. Rare, so the iterator's allocation does not matter.
	for _, r := range t.Supernets(netip.PrefixFrom(a, a.BitLen())) {
		if m.note(r, schemas.EntityCIDR) {
			return blockedBy(schemas.EntityCIDR), true
		}
	}
	return verdict{}, false
}

// matchHeaders reads the headers once and checks header, cookie and JWT blocks.
//
// Every copy of a name reaches the upstream, so every copy is checked. When get_headers is
// truncated, a copy may hide past the limit, and no PDK call can show it: Kong's get_header
// documents the first copy only. So a truncated request that passes the checks on what is
// visible is refused (too_many_headers) if any name an active block needs could have a copy
// past the limit: every blocked header name, cookie, and authorization unless a copy of it
// was seen (it cannot have two).
func (m *matcher) matchHeaders(r request) (verdict, error) {
	hs, err := r.Headers(maxHeaders)
	if err != nil {
		return verdict{}, fmt.Errorf("get headers: %w", err)
	}
	p := m.p
	for _, ref := range p.headers {
		for _, v := range hs[ref.name] {
			if m.matchHash(ref.id, v, schemas.EntityHeader) {
				return blockedBy(schemas.EntityHeader), nil
			}
		}
	}
	if p.cookies.len() > 0 {
		for _, v := range hs["cookie"] {
			if m.matchCookies(v) {
				return blockedBy(schemas.EntityCookie), nil
			}
		}
	}
	if p.token || p.claims.len() > 0 {
		for _, v := range hs[uniqueHeader] {
			if m.matchToken(bearerToken(v)) {
				return blockedBy(schemas.EntityJWT), nil
			}
		}
	}
	if truncated(hs) && m.mayHide(hs) {
		// An attacker may have pushed a blocked value past the limit: a request with a
		// thousand header lines is not one a client sends by accident.
		return verdict{blocked: true, kind: schemas.EntityHeader, reason: reasonTooManyHeaders}, nil
	}
	return verdict{}, nil
}

// truncated reports whether hs holds as many lines as get_headers returns: there may be more.
func truncated(hs map[string][]string) bool {
	lines := 0
	for _, vs := range hs {
		lines += len(vs)
	}
	return lines >= maxHeaders
}

// mayHide reports whether a name some active block needs may have a copy past get_headers'
// limit, given the visible lines hs.
func (m *matcher) mayHide(hs map[string][]string) bool {
	p := m.p
	if p.cookies.len() > 0 {
		return true
	}
	_, authSeen := hs[uniqueHeader]
	if (p.token || p.claims.len() > 0) && !authSeen {
		return true
	}
	for _, ref := range p.headers {
		if ref.name != uniqueHeader || !authSeen {
			return true
		}
	}
	return false
}

// matchHash looks up the SHA-256 of v in namespace ns.
func (m *matcher) matchHash(ns uint32, v string, kind schemas.EntityType) bool {
	r, ok := m.x.lookupValue(ns, v)
	return ok && m.note(r, kind)
}

// matchCookies checks every cookie of one Cookie header that has blocks under its name.
func (m *matcher) matchCookies(header string) bool {
	for {
		name, value, ok := nextPair(&header, ';', true)
		if !ok {
			return false
		}
		ns, ok := m.p.cookies.get(name)
		if !ok {
			continue
		}
		if m.matchHash(ns, value, schemas.EntityCookie) {
			return true
		}
		// A quoted cookie value ("v") may have been reported with or without its quotes.
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' &&
			m.matchHash(ns, value[1:len(value)-1], schemas.EntityCookie) {
			return true
		}
	}
}

// matchQuery checks every query argument that has blocks under its name, decoded as Kong
// decodes it, and also as sent when the two differ. Names and values are decoded into
// buffers on the stack: the lookups do not keep them.
func (m *matcher) matchQuery(raw string) bool {
	var nameBuf, valueBuf [unescapeBufSize]byte
	for {
		rawName, rawValue, ok := nextPair(&raw, '&', false)
		if !ok {
			return false
		}
		ns, ok := m.p.query.get(queryUnescape(rawName, &nameBuf))
		if !ok {
			continue
		}
		value := queryUnescape(rawValue, &valueBuf)
		if m.matchHash(ns, value, schemas.EntityQuery) ||
			(value != rawValue && m.matchHash(ns, rawValue, schemas.EntityQuery)) {
			return true
		}
	}
}

// matchToken checks a bearer token against whole-token and claim blocks.
func (m *matcher) matchToken(tok string) bool {
	if tok == "" {
		return false
	}
	if m.p.token && m.matchHash(nsToken, tok, schemas.EntityJWT) {
		return true
	}
	if m.p.claims.len() == 0 {
		return false
	}
	return m.matchClaims(tok)
}

func (m *matcher) matchConsumer(id, username string) bool {
	for _, v := range [2]string{id, username} {
		if v == "" {
			continue
		}
		if r, ok := m.x.lookupStr(nsConsumer, v); ok && m.note(r, schemas.EntityConsumer) {
			return true
		}
	}
	return false
}

// scopeIDs are the service and route a plugin instance is bound to (Kong's service_id and
// route_id in the instance config): when set, a block naming that id needs no router call.
type scopeIDs struct {
	serviceID, routeID string
}

// matchScoped decides the candidates, fetching the service and the route only when a
// candidate's scope needs them.
func (m *matcher) matchScoped(r request, known scopeIDs) (verdict, error) {
	var (
		svcID, svcName, routeID, routeName string
		haveSvc, haveRoute                 bool
	)
	inService := func(s string) (bool, error) {
		if s == "" || s == known.serviceID {
			return true, nil
		}
		if !haveSvc {
			var err error
			if svcID, svcName, err = r.Service(); err != nil {
				return false, fmt.Errorf("get service: %w", err)
			}
			haveSvc = true
		}
		return s == svcID || s == svcName, nil
	}
	inRoute := func(s string) (bool, error) {
		if s == "" || s == known.routeID {
			return true, nil
		}
		if !haveRoute {
			var err error
			if routeID, routeName, err = r.Route(); err != nil {
				return false, fmt.Errorf("get route: %w", err)
			}
			haveRoute = true
		}
		return s == routeID || s == routeName, nil
	}
	for i := range m.n + len(m.more) {
		var c candidate
		if i < m.n {
			c = m.cands[i]
		} else {
			c = m.more[i-m.n]
		}
		for _, s := range c.set.rules {
			if s.exp <= m.now {
				continue
			}
			okSvc, err := inService(s.service)
			if err != nil {
				return verdict{}, err
			}
			if !okSvc {
				continue
			}
			okRoute, err := inRoute(s.route)
			if err != nil {
				return verdict{}, err
			}
			if okRoute {
				return blockedBy(c.kind), nil
			}
		}
	}
	return verdict{}, nil
}
