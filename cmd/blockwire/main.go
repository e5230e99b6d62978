// Command blockwire is the daemon and CLI of blockwire: it turns Noname
// Security incidents into blocks that Kong enforces.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "blockwire:", err)
		stop()
		os.Exit(1)
	}
}
