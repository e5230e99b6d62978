// Package wait holds the one context-aware pause that the daemons' retry and poll loops share.
package wait

import (
	"context"
	"time"
)

// Sleep pauses for d or until ctx ends, whichever comes first. It returns ctx.Err() when ctx ended
// first, so a loop can leave at once: `if wait.Sleep(ctx, d) != nil { return }`.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
