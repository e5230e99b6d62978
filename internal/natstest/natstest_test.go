package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRestartKeepsStoredMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	url, dir := s.URL(), s.StoreDir()

	js, err := jetstream.New(natstest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}

	s.Restart(t)
	if s.URL() != url || s.StoreDir() != dir {
		t.Fatalf("restart moved: %s %s, was %s %s", s.URL(), s.StoreDir(), url, dir)
	}
	// The old connection reconnects on its own; a fresh one proves the port is the same.
	js, err = jetstream.New(natstest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("message after restart: %v", err)
	}
	if string(msg.Data) != "kept" {
		t.Fatalf("message after restart: %q", msg.Data)
	}
}
