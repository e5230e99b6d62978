package consumer

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// Guardrails keep a detection (or a typo) from blocking what must never be
// blocked. Zero fields take the defaults shown.
type Guardrails struct {
	// NeverBlock lists addresses and ranges no block may cover or sit inside:
	// Kong nodes, health checkers, Noname's own addresses. Loopback
	// (127.0.0.0/8, ::1/128) is always on the list.
	NeverBlock []netip.Prefix
	// MinPrefixV4 is the shortest IPv4 range that may be blocked. Default 16.
	MinPrefixV4 int
	// MinPrefixV6 is the shortest IPv6 range that may be blocked. Default 48.
	MinPrefixV6 int
	// MaxDuration caps a block's duration. Default 30 days.
	MaxDuration time.Duration
	// DefaultDuration applies when an incident gives none. Default 1 hour.
	DefaultDuration time.Duration
	// MaxActiveBlocks is the ceiling on keys in the bucket; a new block past
	// it is refused (extensions still apply). Default 1,000,000.
	MaxActiveBlocks int
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Validate reports whether g, with its defaults filled, is usable.
func (g Guardrails) Validate() error {
	return g.defaults()
}

// defaults fills the zero fields and checks the result. NeverBlock is
// replaced by a canonical copy with loopback added: the caller's slice,
// which g may share, is left as it was.
func (g *Guardrails) defaults() error {
	if g.MinPrefixV4 == 0 {
		g.MinPrefixV4 = 16
	}
	if g.MinPrefixV6 == 0 {
		g.MinPrefixV6 = 48
	}
	if g.MaxDuration == 0 {
		g.MaxDuration = 30 * 24 * time.Hour
	}
	if g.DefaultDuration == 0 {
		g.DefaultDuration = time.Hour
	}
	if g.MaxActiveBlocks == 0 {
		g.MaxActiveBlocks = 1_000_000
	}
	var errs []error
	if g.MinPrefixV4 < 1 || g.MinPrefixV4 > 32 {
		errs = append(errs, fmt.Errorf("minimum IPv4 prefix %d is not within 1–32 (a /0 is never allowed)", g.MinPrefixV4))
	}
	if g.MinPrefixV6 < 1 || g.MinPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("minimum IPv6 prefix %d is not within 1–128 (a /0 is never allowed)", g.MinPrefixV6))
	}
	if g.MaxDuration < time.Second || g.DefaultDuration < time.Second {
		errs = append(errs, errors.New("durations must be at least 1s"))
	}
	if g.DefaultDuration > g.MaxDuration {
		errs = append(errs, fmt.Errorf("default duration %s is above the maximum %s", g.DefaultDuration, g.MaxDuration))
	}
	if g.MaxActiveBlocks < 1 {
		errs = append(errs, fmt.Errorf("max active blocks %d must be positive", g.MaxActiveBlocks))
	}
	never := make([]netip.Prefix, len(g.NeverBlock), len(g.NeverBlock)+len(loopback))
	for i, p := range g.NeverBlock {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("never-block entry %d is not a valid prefix", i+1))
			continue
		}
		never[i] = canonicalPrefix(p)
	}
	g.NeverBlock = append(never, loopback...)
	if len(errs) > 0 {
		return fmt.Errorf("configure guardrails: %w", errors.Join(errs...))
	}
	return nil
}

// Preflight applies the guardrails to one entity as the pipeline will, so
// the manual API can refuse at once, with the reason, what the consumer
// would refuse later. It returns the block key the entity maps to (as
// KeyFor does). Its refusals wrap ErrRefused.
func (g Guardrails) Preflight(e schemas.Entity, scope *schemas.Scope, durationSeconds *int64) (string, error) {
	if err := g.defaults(); err != nil {
		return "", err
	}
	t, err := translate(e, scope)
	if err != nil {
		return "", err
	}
	if _, err := g.duration(durationSeconds); err != nil {
		return "", err
	}
	if err := g.checkAddress(t); err != nil {
		return "", err
	}
	return t.key, nil
}

// duration resolves an incident's requested duration against the limits.
func (g *Guardrails) duration(requested *int64) (time.Duration, error) {
	if requested == nil {
		return g.DefaultDuration, nil
	}
	if *requested < 1 {
		return 0, refuse(ReasonInvalid, "duration %ds is not positive", *requested)
	}
	max := int64(g.MaxDuration / time.Second)
	if *requested > max {
		return 0, refuse(ReasonTooLong, "duration %ds is above the maximum %s", *requested, g.MaxDuration)
	}
	return time.Duration(*requested) * time.Second, nil
}

// checkAddress refuses ranges that are too wide and anything overlapping the
// never-block list: a block inside a protected range, or a range containing
// a protected address, would both cut the protected traffic off.
func (g *Guardrails) checkAddress(t target) error {
	p, ok := t.prefix()
	if !ok {
		return nil
	}
	p = canonicalPrefix(p)
	if p.Bits() == 0 {
		return refuse(ReasonRangeTooWide, "%s would block every address", p)
	}
	min := g.MinPrefixV6
	if p.Addr().Is4() {
		min = g.MinPrefixV4
	}
	if p.Bits() < min {
		return refuse(ReasonRangeTooWide, "%s is wider than the minimum prefix /%d", p, min)
	}
	for _, nb := range g.NeverBlock {
		if nb.Overlaps(p) {
			return refuse(ReasonNeverBlock, "%s overlaps never-block entry %s", p, nb)
		}
	}
	return nil
}

// canonicalPrefix unmaps IPv4-mapped prefixes so ::ffff:10.0.0.0/104 and
// 10.0.0.0/8 compare as the same range. A mapped prefix shorter than /96
// covers all of IPv4 (and more), so it becomes 0.0.0.0/0: refused as a block,
// protecting every IPv4 address as a never-block entry. (The schemas
// canonicaliser keeps such a prefix as IPv6; the incident check refuses it
// before it gets there.)
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		bits := max(p.Bits()-96, 0)
		return netip.PrefixFrom(p.Addr().Unmap(), bits).Masked()
	}
	return p.Masked()
}
