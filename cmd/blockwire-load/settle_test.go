package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSettle(t *testing.T) {
	ns := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, ns.URL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := newSettler(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// No stream, and a stream without consumers: settled at once.
	if waited, err := st.settle(ctx, time.Second); err != nil || waited > time.Second {
		t.Fatalf("empty server: waited %v, %v", waited, err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := js.Publish(ctx, "s", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.settle(ctx, time.Second); err != nil {
		t.Fatalf("stream without consumers: %v", err)
	}

	// A consumer behind by 10: not settled, and the error names it.
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "C", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.settle(ctx, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "10 messages still pending") || !strings.Contains(err.Error(), "S/C") {
		t.Fatalf("backlog of 10: %v", err)
	}

	// Delivered but not acked still counts; acked, it is settled.
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 10 {
		t.Fatalf("fetched %d", len(msgs))
	}
	if _, err := st.settle(ctx, 300*time.Millisecond); err == nil {
		t.Fatal("settled with 10 unacknowledged messages")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		for _, m := range msgs {
			_ = m.Ack()
		}
	}()
	waited, err := st.settle(ctx, 10*time.Second)
	<-done
	if err != nil || waited < 200*time.Millisecond {
		t.Fatalf("after the acks: waited %v, %v", waited, err)
	}

	// A cancelled context stops the wait.
	if _, err := js.Publish(ctx, "s", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := st.settle(cctx, time.Minute); err == nil {
		t.Fatal("settle ignored a cancelled context")
	}
}
