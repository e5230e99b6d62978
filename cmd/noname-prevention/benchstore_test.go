package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// The KV-backed benchmarks share one NATS server per test process, filled once with
// BLOCKWIRE_BENCH_BLOCKS IP blocks (default 20,000, so `-benchtime 1x` runs in CI in
// seconds; the figures in docs/BENCHMARKS.md use 1,000,000). Filling a million takes about
// fifteen seconds, paid once.
type store struct {
	once    sync.Once
	err     error
	dir     string
	srv     *server.Server
	b       *broker.Broker
	blocks  int
	lastIP  string // the last block written: enforced only once the whole bucket is loaded
	filling time.Duration
}

var benchStore store

func benchBlocks() int {
	if v := os.Getenv("BLOCKWIRE_BENCH_BLOCKS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 20_000
}

// benchAddr is the i-th blocked address: 10.0.0.0/8 upwards, then 11.0.0.0/8...
func benchAddr(i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
	return netip.AddrFrom4(b)
}

// sharedStore returns the shared NATS server, provisioned, with its blocks bucket filled.
func sharedStore(tb testing.TB) *store {
	tb.Helper()
	s := &benchStore
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		tb.Fatal(s.err)
	}
	return s
}

func (s *store) start() error {
	var err error
	if s.dir, err = os.MkdirTemp("", "np-bench-nats"); err != nil {
		return err
	}
	s.srv, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: s.dir, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	s.srv.Start()
	if !s.srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("bench nats not ready")
	}
	ctx := context.Background()
	if s.b, err = broker.Open(ctx, broker.Config{URL: s.srv.ClientURL()}); err != nil {
		return err
	}
	if err := s.b.Provision(ctx); err != nil {
		return err
	}
	s.blocks = benchBlocks()
	start := time.Now()
	if err := fillBlocks(ctx, s.b.JetStream(), s.b.Names().BlocksBucket, s.blocks); err != nil {
		return err
	}
	s.filling = time.Since(start)
	s.lastIP = benchAddr(s.blocks - 1).String()
	return nil
}

func (s *store) url() string { return s.srv.ClientURL() }

func stopBenchStore() {
	s := &benchStore
	if s.b != nil {
		_ = s.b.Close(context.Background())
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// fillBlocks writes n IP blocks to the bucket with asynchronous publishes, checking every
// acknowledgement.
func fillBlocks(ctx context.Context, js jetstream.JetStream, bucket string, n int) error {
	exp := time.Now().Add(24 * time.Hour).UTC()
	created := time.Now().UTC()
	futures := make([]jetstream.PubAckFuture, 0, 2000) // under the client's 4000 pending
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("fill: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for i := range n {
		ip := benchAddr(i).String()
		key, err := schemas.BlockKey(schemas.KeyParts{Kind: schemas.EntityIP, Value: ip})
		if err != nil {
			return err
		}
		data, err := json.Marshal(schemas.Block{Kind: schemas.EntityIP, Value: ip, CreatedAt: created, ExpiresAt: exp,
			IncidentID: "bench", IncidentIDs: []string{"bench"}, Title: "benchmark block", Severity: schemas.SeverityHigh,
			Source: schemas.SourceManual})
		if err != nil {
			return err
		}
		m := nats.NewMsg("$KV." + bucket + "." + key)
		m.Data = data
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		futures = append(futures, f)
		if len(futures) == cap(futures) {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	return wait()
}
