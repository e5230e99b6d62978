package faults

import (
	"slices"
	"strings"
	"testing"

	"github.com/blockwire/blockwire/schemas"
)

// TestCheckFindsDamage proves the scenarios' final check on a hand-made state: a healthy one
// passes, and each kind of loss or double application is named.
func TestCheckFindsDamage(t *testing.T) {
	want := []expect{
		{id: "inc-a", seq: 1, keys: []string{"ip.=.=.=.a"}},
		{id: "inc-b", seq: 2, keys: []string{"ip.=.=.=.b1", "ip.=.=.=.b2"}},
	}
	healthy := func() state {
		return state{
			stored: []stored{{seq: 1, id: "inc-a"}, {seq: 2, id: "inc-b"}},
			audit: []schemas.AuditRecord{
				{Action: schemas.ActionAccepted, IncidentID: "inc-a", EventSeq: 1},
				{Action: schemas.ActionBlocked, IncidentID: "inc-a", EventSeq: 1, BlockKey: "ip.=.=.=.a"},
				{Action: schemas.ActionAccepted, IncidentID: "inc-b", EventSeq: 2},
				{Action: schemas.ActionBlocked, IncidentID: "inc-b", EventSeq: 2, BlockKey: "ip.=.=.=.b1"},
				{Action: schemas.ActionBlocked, IncidentID: "inc-b", EventSeq: 2, BlockKey: "ip.=.=.=.b2"},
			},
			blocks: map[string]schemas.Block{
				"ip.=.=.=.a":  {CreatedSeq: 1, UpdatedSeq: 1, IncidentIDs: []string{"inc-a"}},
				"ip.=.=.=.b1": {CreatedSeq: 2, UpdatedSeq: 2, IncidentIDs: []string{"inc-b"}},
				"ip.=.=.=.b2": {CreatedSeq: 2, UpdatedSeq: 2, IncidentIDs: []string{"inc-b"}},
			},
		}
	}
	tests := []struct {
		name   string
		damage func(*state)
		want   string // in one of the problems; "" for none
	}{
		{"healthy", func(*state) {}, ""},
		{"accepted incident not in the log", func(s *state) {
			s.stored = s.stored[:1]
			s.audit = slices.DeleteFunc(s.audit, func(r schemas.AuditRecord) bool { return r.EventSeq == 2 })
		}, "not in the stream"},
		{"another incident at the answered seq", func(s *state) { s.stored[1].id = "inc-x" }, "which holds incident inc-x"},
		{"stored twice", func(s *state) {
			s.stored = append(s.stored, stored{seq: 3, id: "inc-a"})
			s.audit = append(s.audit, schemas.AuditRecord{Action: schemas.ActionAccepted, IncidentID: "inc-a", EventSeq: 3})
		}, "stored 2 times"},
		{"two accepted records", func(s *state) {
			s.audit = append(s.audit, schemas.AuditRecord{Action: schemas.ActionAccepted, IncidentID: "inc-b", EventSeq: 2})
		}, "2 accepted records"},
		{"stored but never taken up", func(s *state) {
			s.audit = slices.DeleteFunc(s.audit, func(r schemas.AuditRecord) bool { return r.Action == schemas.ActionAccepted && r.EventSeq == 1 })
		}, "has accepted records for seqs []"},
		{"block missing", func(s *state) { delete(s.blocks, "ip.=.=.=.b2") }, "ip.=.=.=.b2 is not in the bucket"},
		{"block rewritten", func(s *state) {
			s.blocks["ip.=.=.=.a"] = schemas.Block{CreatedSeq: 1, UpdatedSeq: 7, IncidentIDs: []string{"inc-a"}}
		}, "written by another event"},
		{"blocked twice", func(s *state) {
			s.audit = append(s.audit, schemas.AuditRecord{Action: schemas.ActionBlocked, EventSeq: 2, BlockKey: "ip.=.=.=.b1"})
		}, "2 blocked records"},
		{"blocked record missing", func(s *state) {
			s.audit = slices.DeleteFunc(s.audit, func(r schemas.AuditRecord) bool { return r.BlockKey == "ip.=.=.=.a" })
		}, "has blocked records for seqs []"},
		{"extended", func(s *state) {
			s.audit = append(s.audit, schemas.AuditRecord{Action: schemas.ActionExtended, EventSeq: 2, BlockKey: "ip.=.=.=.a"})
		}, "applied more than once"},
		{"refused", func(s *state) {
			s.audit = append(s.audit, schemas.AuditRecord{Action: schemas.ActionRefused, EventSeq: 2, BlockKey: "ip.=.=.=.b1"})
		}, "audit: refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := healthy()
			tt.damage(&s)
			got := s.problems(want)
			switch {
			case tt.want == "" && len(got) > 0:
				t.Fatalf("a healthy state has problems: %q", got)
			case tt.want != "" && !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }):
				t.Fatalf("problems %q, want one mentioning %q", got, tt.want)
			}
		})
	}
}
