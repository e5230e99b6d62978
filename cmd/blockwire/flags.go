package main

import (
	"fmt"
	"net/netip"
	"strings"
)

// prefixList is a flag of comma-separated addresses or ranges; a bare
// address is its own /32 or /128.
type prefixList struct{ p *[]netip.Prefix }

func (l prefixList) String() string {
	if l.p == nil {
		return ""
	}
	s := make([]string, len(*l.p))
	for i, p := range *l.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l prefixList) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil {
			*l.p = append(*l.p, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return fmt.Errorf("%q is neither an address nor a CIDR range", item)
		}
		*l.p = append(*l.p, p)
	}
	return nil
}

func (prefixList) Type() string { return "addresses" }
