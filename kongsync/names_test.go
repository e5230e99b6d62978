package kongsync_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

// Block values are arbitrary strings. A name is one path segment of the lookup (GET
// /consumers/{x}, /services/{x}, /routes/{x}): it must reach Kong escaped, so that "alice#x" never
// asks for alice, and a name no request can carry is one unresolved scope, never a failed
// reconcile that keeps every other block out of Kong.
func TestNamesAreOnePathSegment(t *testing.T) {
	const (
		globalIP = "203.0.113.7"
		scopedIP = "203.0.113.8"
	)
	for _, tc := range []struct {
		name string
		// consumer is the value of a consumer block; blocked is the Kong username its
		// request-termination must be on ("" when the name must be reported unresolved).
		consumer, blocked string
		// scope limits an address block; scopedAt is the Kong service or route name whose
		// ip-restriction must hold it ("" when the scope must be reported unresolved).
		scope    *schemas.Scope
		scopedAt string
		// asked is the one lookup path Kong must see, as Kong decodes it ("" for none at all).
		asked string
	}{
		{name: "fragment", consumer: "alice#not-alice", asked: "/consumers/alice#not-alice"},
		{name: "query", consumer: "alice?x=1", asked: "/consumers/alice?x=1"},
		{name: "traversal", consumer: "../services/x", asked: "/consumers/../services/x"},
		{name: "invalid escape", consumer: "bad%zz", asked: "/consumers/bad%zz"},
		{name: "valid escape", consumer: "%61lice", blocked: "%61lice", asked: "/consumers/%61lice"},
		{name: "slash", consumer: "team/a", blocked: "team/a", asked: "/consumers/team/a"},
		{name: "plus and space", consumer: "a+b c", blocked: "a+b c", asked: "/consumers/a+b c"},
		{name: "dot-dot", consumer: ".."},
		{name: "dot", consumer: "."},
		{name: "service with a query", scope: &schemas.Scope{Service: "orders?x=1"}, asked: "/services/orders?x=1"},
		{name: "service with a slash", scope: &schemas.Scope{Service: "x/../orders"}, asked: "/services/x/../orders"},
		{name: "route with a fragment", scope: &schemas.Scope{Route: "list-orders#x"}, asked: "/routes/list-orders#x"},
		{name: "route with an escape", scope: &schemas.Scope{Route: "list%2Dorders"}, asked: "/routes/list%2Dorders"},
		{name: "route dot-dot", scope: &schemas.Scope{Route: ".."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, kongfake.Options{})
			ids := map[string]string{}
			for _, name := range []string{"alice", "team/a", "%61lice", "a+b c"} {
				ids[name] = r.kong.AddConsumer(name)
			}
			ids["orders"] = r.kong.AddService("orders")
			ids["list-orders"] = r.kong.AddRoute("list-orders", ids["orders"])
			r.kong.AddService("x")

			r.block(schemas.EntityIP, globalIP, nil, time.Hour)
			want := map[string]bool{"ip-restriction global": true} // what the managed plugins must be
			if tc.consumer != "" {
				r.block(schemas.EntityConsumer, tc.consumer, nil, time.Hour)
				if tc.blocked != "" {
					want["request-termination consumer="+ids[tc.blocked]] = true
				}
			}
			if tc.scope != nil {
				r.block(schemas.EntityIP, scopedIP, tc.scope, time.Hour)
				switch tc.scopedAt {
				case "":
				case "orders":
					want["ip-restriction service="+ids["orders"]] = true
				default:
					want["ip-restriction route="+ids[tc.scopedAt]] = true
				}
			}
			unresolved := tc.blocked == "" && tc.consumer != "" || tc.scopedAt == "" && tc.scope != nil
			s := r.syncer(kongsync.KongConfig{}, nil)
			r.run(s)

			eventually(t, "the reconcile done, the name resolved or reported", func() (bool, string) {
				st, err := r.status()
				if err != nil {
					return false, err.Error()
				}
				if st.State != kongsync.StateSynced {
					return false, fmt.Sprintf("state %s: %s", st.State, st.Error)
				}
				if unresolved != (len(st.Unresolved) == 1) || len(st.Unresolved) > 1 {
					return false, fmt.Sprintf("unresolved %+v", st.Unresolved)
				}
				for _, u := range st.Unresolved {
					if tc.consumer != "" && u.Consumer != tc.consumer ||
						tc.scope != nil && (u.Service != tc.scope.Service || u.Route != tc.scope.Route) {
						return false, fmt.Sprintf("unresolved %+v", u)
					}
				}
				got := map[string]bool{}
				for _, p := range r.managed() {
					got[p.Name+" "+kongsync.Scope{Service: p.Service, Route: p.Route, Consumer: p.Consumer}.String()] = true
				}
				if len(got) != len(want) {
					return false, fmt.Sprintf("managed %v, want %v", got, want)
				}
				for k := range want {
					if !got[k] {
						return false, fmt.Sprintf("managed %v, want %v", got, want)
					}
				}
				deny, _ := r.denyAt(kongsync.Scope{})
				return slices.Equal(deny, []string{globalIP}), fmt.Sprint("global deny ", deny)
			})

			var asked []string
			for _, q := range r.kong.Requests() {
				if q.Method == "GET" && !strings.HasPrefix(q.Path, "/plugins") && q.Path != "/" {
					asked = append(asked, q.Path)
				}
			}
			var wantAsked []string
			if tc.asked != "" {
				wantAsked = []string{tc.asked}
			}
			if !slices.Equal(slices.Compact(asked), wantAsked) {
				t.Fatalf("lookups %q, want %q", asked, wantAsked)
			}
		})
	}
}
