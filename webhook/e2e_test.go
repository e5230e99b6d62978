package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

// TestIncidentsEndToEnd posts every valid sample incident to the webhook and
// checks the consumer made each entity's block: the right key, the
// incident remembered, an expiry no earlier than asked; then the unblock
// sample removes its keys.
func TestIncidentsEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	e.runConsumer(t)
	kv, err := e.broker.Blocks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../testdata/incidents/valid/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no sample incidents in ../testdata/incidents/valid")
	}
	var unblocks []string
	for _, f := range files {
		body, inc := readIncident(t, f)
		if inc.EffectiveType() == schemas.TypeUnblock {
			unblocks = append(unblocks, f)
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			posted := time.Now()
			if r := do(t, e.signedRequest(t, body)); r.status != 202 {
				t.Fatalf("status %d: %v", r.status, r.body)
			}
			want := time.Hour // serve's default duration
			if inc.DurationSeconds != nil {
				want = time.Duration(*inc.DurationSeconds) * time.Second
			}
			if want > 30*24*time.Hour {
				t.Skip("above the default maximum duration: refused by a guardrail (consumer tests cover it)")
			}
			for _, ent := range inc.Entities {
				key, err := consumer.KeyFor(ent, inc.Scope)
				if err != nil {
					t.Fatalf("%+v: %v", ent, err)
				}
				b := waitBlock(t, kv, key, inc.ID)
				if b.Kind != ent.Type || b.Source != schemas.SourceWebhook {
					t.Errorf("%s: block %+v", key, b)
				}
				if b.ExpiresAt.Before(posted.Add(want - time.Second)) {
					t.Errorf("%s expires at %s, want no earlier than %s from now", key, b.ExpiresAt, want)
				}
				if b.ValueSHA256 != "" && b.Value != "" || b.Value == ent.Value && ent.Type.HasName() {
					t.Errorf("%s: a secret is stored raw: %+v", key, b)
				}
			}
		})
	}
	for _, f := range unblocks {
		body, inc := readIncident(t, f)
		if r := do(t, e.signedRequest(t, body)); r.status != 202 {
			t.Fatalf("%s: status %d: %v", f, r.status, r.body)
		}
		for _, ent := range inc.Entities {
			key, _ := consumer.KeyFor(ent, inc.Scope)
			eventually(t, func() error {
				if _, err := kv.Get(t.Context(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
					return fmt.Errorf("%s still blocked after %s (%v)", key, filepath.Base(f), err)
				}
				return nil
			})
		}
	}
}

func readIncident(t *testing.T, file string) ([]byte, *schemas.Incident) {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	inc, err := schemas.ParseIncident(body)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return body, inc
}

// waitBlock waits until the block under key remembers the incident.
func waitBlock(t *testing.T, kv jetstream.KeyValue, key, incident string) schemas.Block {
	t.Helper()
	var b schemas.Block
	eventually(t, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		entry, err := kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if err := json.Unmarshal(entry.Value(), &b); err != nil {
			return err
		}
		if !slices.Contains(b.IncidentIDs, incident) {
			return fmt.Errorf("%s does not remember %s: %v", key, incident, b.IncidentIDs)
		}
		return nil
	})
	return b
}
