package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Settling: serve does not only answer the webhook, it also consumes what the
// webhook stored (turning incidents into blocks) in the background. After a
// webhook run the consumer has a backlog, which it works off on the same CPUs
// while the next run goes on — and the next run may be the reference's. So
// before every timed run the load waits until no JetStream consumer on the
// NATS server has messages to deliver or acks to await: each run starts on an
// idle server, and neither target pays for work the other one caused. (Work
// the consumer does during a webhook run still counts against the webhook.)

const settlePoll = 100 * time.Millisecond

// settler watches the consumers of one NATS server.
type settler struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func newSettler(natsURL string) (*settler, error) {
	nc, err := nats.Connect(natsURL, nats.Name("blockwire-load settle"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &settler{nc: nc, js: js}, nil
}

func (s *settler) Close() { s.nc.Close() }

// pending is the number of messages all consumers of all streams have yet to
// deliver or to see acknowledged, and the consumer with the most of them.
func (s *settler) pending(ctx context.Context) (total uint64, most string, err error) {
	var mostN uint64
	streams := s.js.ListStreams(ctx)
	for si := range streams.Info() {
		st, err := s.js.Stream(ctx, si.Config.Name)
		if err != nil {
			continue // deleted meanwhile
		}
		cons := st.ListConsumers(ctx)
		for ci := range cons.Info() {
			n := ci.NumPending + uint64(max(ci.NumAckPending, 0))
			total += n
			if n > mostN {
				mostN, most = n, si.Config.Name+"/"+ci.Name
			}
		}
		if err := cons.Err(); err != nil {
			return 0, "", err
		}
	}
	if err := streams.Err(); err != nil {
		return 0, "", err
	}
	return total, most, nil
}

// settle waits until no consumer has pending messages, polling every 100ms,
// for at most timeout. It returns how long it waited and, if the server did
// not settle in time, an error saying what was still pending.
func (s *settler) settle(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, most, err := s.pending(qctx)
		cancel()
		if err != nil {
			return time.Since(start), fmt.Errorf("list JetStream consumers: %w", err)
		}
		if n == 0 {
			return time.Since(start), nil
		}
		if !time.Now().Before(deadline) {
			return time.Since(start), fmt.Errorf("%d messages still pending after %s (most on %s)", n, timeout, most)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(settlePoll):
		}
	}
}
