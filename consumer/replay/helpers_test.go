package replay_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/internal/fixture"
	"github.com/blockwire/blockwire/internal/natstest"
)

// history is a server holding a generated history the pipeline applied.
type history struct {
	b      *broker.Broker
	items  []fixture.Item
	reader *replay.Reader
}

// newHistory stores items, applies them with a real consumer, and waits.
func newHistory(t *testing.T, items []fixture.Item, mutate func(*consumer.Config)) *history {
	t.Helper()
	ctx := context.Background()
	srv := natstest.Start(t)
	b := natstest.Provisioned(t, srv.URL())
	cfg := consumer.Config{JS: b.JetStream(), Conn: b.Conn(), Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(), Actor: "test"}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := consumer.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	fixture.WaitApplied(t, b.JetStream(), b.Names().IncidentStream, "blockwire", fixture.Publish(t, b.JetStream(), items))
	r, err := replay.NewReader(b.JetStream(), b.Names())
	if err != nil {
		t.Fatal(err)
	}
	return &history{b: b, items: items, reader: r}
}

// events runs a replay and collects what it emits.
func (h *history) events(t *testing.T, f replay.Filter) []replay.Event {
	t.Helper()
	var evs []replay.Event
	if err := h.reader.Run(context.Background(), f, func(ev replay.Event) error {
		evs = append(evs, ev)
		return nil
	}, nil); err != nil {
		t.Fatalf("replay %+v: %v", f, err)
	}
	return evs
}

// active is the bucket's active blocks: key → expiry.
func (h *history) active(t *testing.T) map[string]time.Time {
	t.Helper()
	l, err := consumer.NewLister(h.b.JetStream(), h.b.Names().BlocksBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	list, _, err := l.List(context.Background(), "", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]time.Time, len(list))
	for _, b := range list {
		m[b.Key] = b.ExpiresAt
	}
	return m
}
