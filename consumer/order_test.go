package consumer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// TestLateIncidentsFollowLogOrder: incidents are applied in parallel and redelivered after a
// failure, so a block and an unblock of one key can arrive out of the log's order. The bucket
// must end as the log's order says, and the incident that arrived too late is audited as
// superseded.
func TestLateIncidentsFollowLogOrder(t *testing.T) {
	type step struct {
		seq     uint64
		unblock bool
	}
	tests := []struct {
		name       string
		steps      []step // applied in this order; the log's order is by seq
		blocked    bool
		createdSeq uint64 // of the block left, when blocked
		superseded uint64 // the seq whose last application is refused as superseded; 0 none
	}{
		{"in order: block, unblock", []step{{1, false}, {2, true}}, false, 0, 0},
		{"in order: block, unblock, block", []step{{1, false}, {2, true}, {3, false}}, true, 3, 0},
		// A redelivery's audit records carry the first delivery's ids: what it did then stands.
		{"an unblock redelivered after a later block", []step{{1, false}, {2, true}, {3, false}, {2, true}}, true, 3, 0},
		{"a block redelivered after a later unblock", []step{{1, false}, {2, true}, {1, false}}, false, 0, 0},
		{"a block first applied after a later unblock", []step{{2, true}, {1, false}}, false, 0, 1},
		{"an unblock arriving after a later extension", []step{{1, false}, {3, false}, {2, true}}, true, 1, 2},
	}
	r := newRig(t)
	c := r.newConsumer(nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := schemas.Entity{Type: "ip", Value: fmt.Sprintf("192.0.2.%d", 100+i)}
			key := mustKey(t, schemas.KeyParts{Kind: "ip", Value: e.Value})
			base := uint64(1000 * (i + 1)) // seqs of their own, so audit ids do not collide
			for _, s := range tt.steps {
				inc := r.incident([]schemas.Entity{e}, func(in *schemas.Incident) {
					in.ID = fmt.Sprintf("order-%d-%d", i, s.seq)
					if s.unblock {
						in.Type = schemas.TypeUnblock
					}
				})
				if err := c.process(t.Context(), natsMsg("x", nil).Header, mustJSON(t, inc), base+s.seq, time.Now()); err != nil {
					t.Fatalf("apply seq %d: %v", s.seq, err)
				}
			}
			b := r.block(key)
			if (b != nil) != tt.blocked {
				t.Fatalf("blocked = %v, want %v (%+v)", b != nil, tt.blocked, b)
			}
			if b != nil && b.CreatedSeq != base+tt.createdSeq {
				t.Errorf("block created by seq %d, want %d", b.CreatedSeq-base, tt.createdSeq)
			}
			var got uint64
			for _, rec := range r.audits() {
				if rec.BlockKey == key && rec.Action == schemas.ActionRefused && strings.HasPrefix(rec.Detail, ReasonSuperseded+":") {
					got = rec.EventSeq - base
				}
			}
			if got != tt.superseded {
				t.Errorf("superseded audit for seq %d, want %d", got, tt.superseded)
			}
		})
	}
}
