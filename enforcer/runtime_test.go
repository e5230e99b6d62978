package enforcer

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The status line warns when consumer blocks are loaded but the plugin runs before Kong's
// authentication plugins, where no consumer is known yet.
func TestStatusWarnsAboutConsumerBlocksBeforeAuth(t *testing.T) {
	const warning = "consumer blocks cannot match"
	for _, tt := range []struct {
		name     string
		priority int
		blocks   []blk
		want     bool
	}{
		{"default priority with consumer blocks", 1950, []blk{{kind: "consumer", value: "alice"}}, true},
		{"after authentication", 1000, []blk{{kind: "consumer", value: "alice"}}, false},
		{"default priority without consumer blocks", 1950, []blk{{kind: "ip", value: "203.0.113.7"}}, false},
		{"priority unknown", 0, []blk{{kind: "consumer", value: "alice"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rt, m := testRuntime(t, newTestWriter(t, tt.blocks...).idx)
			var out bytes.Buffer
			rt.log, rt.priority = zerolog.New(&out), tt.priority
			rt.logStatus(m, time.Now())
			if !strings.Contains(out.String(), "enforcer status") {
				t.Fatalf("no status line:\n%s", out.String())
			}
			if got := strings.Contains(out.String(), warning); got != tt.want {
				t.Errorf("warned=%v, want %v:\n%s", got, tt.want, out.String())
			}
		})
	}
}
