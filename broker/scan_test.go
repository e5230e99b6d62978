package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// noResponders wraps a real JetStream so that the ordered consumers it
// opens have their first pulls end as on a cluster whose consumer has no
// responder yet: Fetch succeeds and the batch carries nats.ErrNoResponders.
// With keep, the first pull's messages are delivered before that error;
// without, the pull delivers nothing.
type noResponders struct {
	jetstream.JetStream
	keep  bool
	fails int // pulls to fail
}

func (n *noResponders) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := n.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	return &failingConsumer{Consumer: c, keep: n.keep, fails: n.fails}, nil
}

type failingConsumer struct {
	jetstream.Consumer
	keep  bool
	fails int
}

func (c *failingConsumer) Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	if c.fails == 0 {
		return c.Consumer.Fetch(batch, opts...)
	}
	c.fails--
	out := make(chan jetstream.Msg, batch)
	if c.keep {
		b, err := c.Consumer.Fetch(min(batch, 2), opts...)
		if err != nil {
			return nil, err
		}
		for m := range b.Messages() {
			out <- m
		}
	}
	close(out)
	return &failedBatch{msgs: out}, nil
}

type failedBatch struct {
	msgs chan jetstream.Msg
}

func (b *failedBatch) Messages() <-chan jetstream.Msg { return b.msgs }
func (b *failedBatch) Error() error                   { return nats.ErrNoResponders }

// TestScanRetriesNoResponders: a pull answered "no responders" ends in the
// batch, not in Fetch; Scan retries it, and after a pull that delivered
// some messages before failing it resumes after them, each message read
// once and in order.
func TestScanRetriesNoResponders(t *testing.T) {
	ctx := testCtx(t)
	nc := natstest.Connect(t, natstest.Start(t).URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	const total = 5
	for i := range total {
		if _, err := js.Publish(ctx, "s.x", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		keep  bool
		fails int
	}{{"empty pulls", false, 2}, {"partial pull", true, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := broker.Scan(ctx, &noResponders{JetStream: js, keep: tc.keep, fails: tc.fails}, "S", jetstream.OrderedConsumerConfig{},
				func(m jetstream.Msg, done, total uint64) error {
					got = append(got, string(m.Data()))
					return nil
				})
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if want := "[0 1 2 3 4]"; fmt.Sprint(got) != want {
				t.Fatalf("read %v, want %s", got, want)
			}
		})
	}
}
