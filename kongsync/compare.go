package kongsync

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/kong/go-kong/kong"
)

// hashPlugin fingerprints what a managed plugin holds, to recognise drift.
func hashPlugin(k *kong.Plugin) string {
	c := *k
	c.ID = nil                  // the same content under an adopted id is the same instance
	data, _ := json.Marshal(&c) // maps marshal with sorted keys: deterministic
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// matches reports whether a plugin in Kong already is what the sync would write.
func matches(have, want *kong.Plugin) bool {
	if str(have.Name) != str(want.Name) || scopeOf(have) != scopeOf(want) || !enabled(have) ||
		str(have.InstanceName) != str(want.InstanceName) || !sameSet(strs(have.Tags), strs(want.Tags)) {
		return false
	}
	for k, w := range want.Config {
		if !sameValue(have.Config[k], w) {
			return false
		}
	}
	return true
}

// sameValue compares a config value Kong answered (decoded JSON) with one the sync sends.
func sameValue(have, want any) bool {
	switch w := want.(type) {
	case nil:
		switch h := have.(type) {
		case nil:
			return true
		case []any:
			return len(h) == 0
		}
		return false
	case []string:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		hs := make([]string, 0, len(h))
		for _, v := range h {
			s, ok := v.(string)
			if !ok {
				return false
			}
			hs = append(hs, s)
		}
		return sameSet(hs, w)
	case int:
		h, ok := have.(float64)
		return ok && h == float64(w)
	}
	return have == want
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[string]int, len(a))
	for _, s := range a {
		set[s]++
	}
	for _, s := range b {
		if set[s] == 0 {
			return false
		}
		set[s]--
	}
	return true
}

// missing counts the entries of list a user-owned ip-restriction does not deny itself.
func missing(list []string, u *kong.Plugin) int {
	if !enabled(u) {
		return len(list)
	}
	deny := map[string]bool{}
	if raw, ok := u.Config["deny"].([]any); ok {
		for _, v := range raw {
			if s, ok := v.(string); ok {
				deny[s] = true
			}
		}
	}
	n := 0
	for _, s := range list {
		if !deny[s] {
			n++
		}
	}
	return n
}

func hasTag(k *kong.Plugin, tag string) bool { return slices.Contains(strs(k.Tags), tag) }

func enabled(k *kong.Plugin) bool { return k.Enabled == nil || *k.Enabled }

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func strs(list []*string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if s != nil {
			out = append(out, *s)
		}
	}
	return out
}

func sortedRefs(m map[scopeRef][]string) []scopeRef {
	out := make([]scopeRef, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b scopeRef) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Route, b.Route))
	})
	return out
}

// sortedScopes orders scopes least specific first (global first), then by name.
func sortedScopes[V any](m map[Scope]V) []Scope {
	out := make([]Scope, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Scope) int {
		return cmp.Or(cmp.Compare(b.rank(), a.rank()), cmp.Compare(a.String(), b.String()))
	})
	return out
}

func sortedPlugins(m map[string]*kong.Plugin) []*kong.Plugin {
	out := make([]*kong.Plugin, 0, len(m))
	for _, k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *kong.Plugin) int { return cmp.Compare(str(a.ID), str(b.ID)) })
	return out
}
