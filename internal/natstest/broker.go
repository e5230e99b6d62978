package natstest

import (
	"context"
	"testing"

	"github.com/blockwire/blockwire/broker"
)

// Provisioned opens a broker on url with blockwire's streams and bucket provisioned, closed by
// t.Cleanup: the setup every package's test rig starts from.
func Provisioned(t testing.TB, url string) *broker.Broker {
	t.Helper()
	ctx := context.Background()
	b, err := broker.Open(ctx, broker.Config{URL: url})
	if err != nil {
		t.Fatalf("natstest: open broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Provision(ctx); err != nil {
		t.Fatalf("natstest: provision: %v", err)
	}
	return b
}
