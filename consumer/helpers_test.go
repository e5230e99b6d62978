package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/fixture"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/blockwire/blockwire/schemas"
)

// rig is a provisioned embedded NATS with helpers to feed the pipeline and
// read what it did.
type rig struct {
	t      testing.TB
	srv    *natstest.Server
	b      *broker.Broker
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	names  broker.Names
	nextID int
}

func newRig(t testing.TB) *rig {
	t.Helper()
	srv := natstest.Start(t)
	return openRig(t, srv)
}

func openRig(t testing.TB, srv *natstest.Server) *rig {
	t.Helper()
	ctx := context.Background()
	b := natstest.Provisioned(t, srv.URL())
	kv, err := b.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, srv: srv, b: b, js: b.JetStream(), kv: kv, names: b.Names()}
}

// newConsumer builds a consumer on its own connection, as a separate
// serve process would have.
func (r *rig) newConsumer(mutate func(*Config)) *Consumer {
	r.t.Helper()
	nc, err := nats.Connect(r.srv.URL())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	cfg := Config{
		JS: js, Conn: nc, Registry: prometheus.NewRegistry(), Logger: zerolog.Nop(),
		Actor: "test", AckWait: 2 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		r.t.Fatalf("new consumer: %v", err)
	}
	return c
}

// run starts c until the test ends.
func (r *rig) run(c *Consumer) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("consumer run: %v", err)
		}
	})
}

// publish stores an incident as the webhook would and returns its sequence.
func (r *rig) publish(inc any) uint64 {
	r.t.Helper()
	data, err := json.Marshal(inc)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.publishRaw("noname.incidents.webhook", data, "webhook")
}

func (r *rig) publishRaw(subject string, data []byte, source string) uint64 {
	r.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if source != "" {
		m.Header.Set(schemas.HeaderSource, source)
	}
	ack, err := r.js.PublishMsg(context.Background(), m)
	if err != nil {
		r.t.Fatalf("publish incident: %v", err)
	}
	return ack.Sequence
}

func (r *rig) incident(entities []schemas.Entity, mutate func(*schemas.Incident)) schemas.Incident {
	r.nextID++
	inc := schemas.Incident{ID: fmt.Sprintf("inc-%d", r.nextID), Type: schemas.TypeBlock, Title: "test", Entities: entities}
	if mutate != nil {
		mutate(&inc)
	}
	return inc
}

// waitApplied waits until the consumer has acknowledged every incident up to seq.
func (r *rig) waitApplied(seq uint64) {
	r.t.Helper()
	fixture.WaitApplied(r.t, r.js, r.names.IncidentStream, "blockwire", seq)
}

// block reads a key; nil when absent.
func (r *rig) block(key string) *schemas.Block {
	r.t.Helper()
	e, err := r.kv.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		r.t.Fatalf("get %s: %v", key, err)
	}
	var b schemas.Block
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		r.t.Fatalf("decode %s: %v", key, err)
	}
	return &b
}

func (r *rig) keys() []string {
	r.t.Helper()
	lister, err := r.kv.ListKeys(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// audits returns every audit record stored so far.
func (r *rig) audits() []schemas.AuditRecord {
	r.t.Helper()
	return readStream[schemas.AuditRecord](r.t, r.js, r.names.AuditStream)
}

func readStream[T any](t testing.TB, js jetstream.JetStream, stream string) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(int(min(1000, info.State.Msgs-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var v T
			if err := json.Unmarshal(m.Data(), &v); err != nil {
				t.Fatalf("decode %s message: %v", stream, err)
			}
			out = append(out, v)
		}
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v", stream, ctx.Err())
		}
	}
	return out
}

func eventually(t testing.TB, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustKey(t testing.TB, p schemas.KeyParts) string {
	t.Helper()
	k, err := schemas.BlockKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func dur(s int64) *int64 { return &s }

// serverTTL is the TTL the server holds for a key's current message.
func (r *rig) serverTTL(key string) time.Duration {
	r.t.Helper()
	s, err := r.js.Stream(context.Background(), "KV_"+r.names.BlocksBucket)
	if err != nil {
		r.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), "$KV."+r.names.BlocksBucket+"."+key)
	if err != nil {
		r.t.Fatalf("last message of %s: %v", key, err)
	}
	d, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader))
	if err != nil {
		if secs, err2 := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader) + "s"); err2 == nil {
			return secs
		}
		r.t.Fatalf("%s has no readable TTL header: %v (%v)", key, m.Header, err)
	}
	return d
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func natsMsg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(schemas.HeaderSource, string(schemas.SourceWebhook))
	return m
}
