package consumer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// One benchmark iteration applies benchEntities entities, in incidents of
// benchEntitiesPerIncident.
const (
	benchEntities            = 20000
	benchEntitiesPerIncident = 50
)

// BenchmarkApply measures entities applied per second end to end from the
// stream (block written with its TTL, audit record stored, incident acked),
// and in the same run, on a fresh server of the same kind (embedded, file
// store), the raw rate of the same KV writes with TTL and no logic:
// asynchronous puts, every ack awaited. It reports both and their ratio.
func BenchmarkApply(b *testing.B) {
	var applied, raw time.Duration
	for i := range b.N {
		b.StopTimer()
		raw += rawPuts(b, i)
		applied += applyAll(b, i)
	}
	total := float64(b.N * benchEntities)
	b.ReportMetric(total/applied.Seconds(), "entities/s")
	b.ReportMetric(total/raw.Seconds(), "raw_puts/s")
	b.ReportMetric(raw.Seconds()/applied.Seconds(), "ratio")
}

func benchAddress(iter, i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+iter%2, i/256%256, i%256)
}

// rawPuts is the reference: the same keys and values, published to the
// bucket's subjects with a TTL, asynchronously.
func rawPuts(b *testing.B, iter int) time.Duration {
	b.Helper()
	r := newRig(b)
	ctx := context.Background()
	msgs := make([]*nats.Msg, benchEntities)
	for i := range msgs {
		e := schemas.Entity{Type: schemas.EntityIP, Value: benchAddress(iter, i)}
		tgt, err := translate(e, nil)
		if err != nil {
			b.Fatal(err)
		}
		blk := tgt.block
		blk.CreatedAt, blk.ExpiresAt, blk.IncidentID, blk.IncidentIDs = time.Now(), time.Now().Add(time.Hour), "raw", []string{"raw"}
		msgs[i] = nats.NewMsg("$KV." + r.names.BlocksBucket + "." + tgt.key)
		msgs[i].Data = mustJSON(b, blk)
	}
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := r.js.PublishMsgAsync(m, jetstream.WithMsgTTL(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-ctx.Done():
		}
	}
	return time.Since(start)
}

// applyAll stores the incidents first, then times the consumer from start
// until every incident is acknowledged.
func applyAll(b *testing.B, iter int) time.Duration {
	b.Helper()
	r := newRig(b)
	var last uint64
	for n := 0; n < benchEntities; n += benchEntitiesPerIncident {
		entities := make([]schemas.Entity, benchEntitiesPerIncident)
		for j := range entities {
			entities[j] = schemas.Entity{Type: schemas.EntityIP, Value: benchAddress(iter, n+j)}
		}
		last = r.publish(schemas.Incident{ID: fmt.Sprintf("bench-%d", n), Type: schemas.TypeBlock, Entities: entities})
	}
	c := r.newConsumer(nil)
	b.StartTimer()
	start := time.Now()
	r.run(c)
	r.waitApplied(last)
	elapsed := time.Since(start)
	b.StopTimer()
	if n := len(r.keys()); n != benchEntities {
		b.Fatalf("%d blocks, want %d", n, benchEntities)
	}
	return elapsed
}
