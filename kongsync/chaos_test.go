package kongsync_test

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

// TestKongChaos (issue 7, scenario 3): a Kong that answers 30% 5xx, some
// 429 with Retry-After and some 2 s stalls while blocks come and go, then is
// down altogether (3 s compact, 30 s with BLOCKWIRE_SOAK=1); once it is back,
// Kong matches the bucket with no duplicate plugins.
func TestKongChaos(t *testing.T) {
	outage := 3 * time.Second
	if os.Getenv("BLOCKWIRE_SOAK") == "1" {
		outage = 30 * time.Second
	}
	const period = 2 * time.Second
	r := newRig(t, kongfake.Options{})
	mallory := r.kong.AddConsumer("mallory")
	s := r.syncer(kongsync.KongConfig{RequestTimeout: time.Second}, func(c *kongsync.Config) { c.Period = period })
	r.run(s)

	r.kong.Inject(kongfake.Fault{Status: http.StatusServiceUnavailable, Probability: 0.3})
	r.kong.Inject(kongfake.Fault{WritesOnly: true, Status: http.StatusTooManyRequests, RetryAfter: "1", Probability: 0.1})
	r.kong.Inject(kongfake.Fault{Delay: 2 * time.Second, Probability: 0.1})
	var keys []string
	for i := range 40 {
		keys = append(keys, r.block(schemas.EntityIP, fmt.Sprintf("198.51.100.%d", i), nil, time.Hour))
		if i%5 == 4 {
			r.unblock(keys[i-2])
		}
		time.Sleep(25 * time.Millisecond) // changes spread over the faults
	}
	r.block(schemas.EntityConsumer, "mallory", nil, time.Hour)

	down := r.kong.Inject(kongfake.Fault{Drop: true})
	for i := range 20 { // blocks keep coming while Kong is down
		r.block(schemas.EntityIP, fmt.Sprintf("203.0.113.%d", i), nil, time.Hour)
	}
	time.Sleep(outage)
	down()
	r.kong.ClearFaults()
	back := time.Now()

	want := r.wantDeny()
	eventually(t, "Kong matches the bucket after the faults", func() (bool, string) {
		got, _ := r.denyAt(kongsync.Scope{})
		got = slices.Sorted(slices.Values(got))
		return slices.Equal(got, want), fmt.Sprintf("kong %v, bucket %v", got, want)
	})
	eventually(t, "the blocked consumer terminated", func() (bool, string) {
		for _, p := range r.managed() {
			if p.Name == "request-termination" && p.Consumer == mallory {
				return true, ""
			}
		}
		return false, fmt.Sprint(r.managed())
	})
	t.Logf("FIGURES kong chaos: outage %s; Kong matched the bucket %.2f s after it came back (reconcile period %s); %d requests, %d writes",
		outage, time.Since(back).Seconds(), period, len(r.kong.Requests()), r.kong.Writes())
	seen := map[string]bool{}
	for _, p := range r.managed() {
		scope := p.Name + "|" + p.Service + "|" + p.Route + "|" + p.Consumer
		if seen[scope] {
			t.Fatalf("two managed %s plugins at one scope: %+v", p.Name, r.managed())
		}
		seen[scope] = true
	}
	if len(r.managed()) != 2 {
		t.Fatalf("managed plugins %+v, want the deny list and the consumer's termination", r.managed())
	}
}

// wantDeny is the sorted list of active address blocks in the bucket.
func (r *rig) wantDeny() []string {
	r.t.Helper()
	lister, err := r.kv.ListKeys(r.t.Context())
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for k := range lister.Keys() {
		p, err := schemas.ParseBlockKey(k)
		if err == nil && p.Kind == schemas.EntityIP {
			out = append(out, p.Value)
		}
	}
	slices.Sort(out) // compared as sets: Kong's order is not the point here
	return out
}
