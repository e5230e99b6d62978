package broker_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

const blocksStream = "KV_" + broker.DefaultBlocksBucket

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return st.CachedInfo().Config
}

func TestProvisionCreatesAndIsIdempotent(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, broker.Config{URL: natstest.Start(t).URL()})
	js := b.JetStream()
	if err := b.Provision(ctx); err != nil {
		t.Fatalf("first Provision: %v", err)
	}
	names := []string{broker.DefaultIncidentStream, broker.DefaultAuditStream, broker.DefaultDLQStream, blocksStream}
	before := map[string]jetstream.StreamConfig{}
	for _, n := range names {
		before[n] = streamConfig(t, js, n)
	}

	inc := before[broker.DefaultIncidentStream]
	if inc.Storage != jetstream.FileStorage || inc.Duplicates != 10*time.Minute ||
		inc.MaxAge != 90*24*time.Hour || !slices.Equal(inc.Subjects, []string{"noname.incidents.>"}) {
		t.Errorf("incident stream config: %+v", inc)
	}
	if a := before[broker.DefaultAuditStream]; a.Duplicates != broker.AuditDuplicateWindow || a.MaxAge != 365*24*time.Hour {
		t.Errorf("audit stream config: %+v", a)
	}
	kv := before[blocksStream]
	if kv.MaxMsgsPerSubject != 1 || !kv.AllowMsgTTL || kv.SubjectDeleteMarkerTTL != broker.BlockMarkerTTL {
		t.Errorf("blocks bucket config: %+v", kv)
	}

	if err := b.Provision(ctx); err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	for _, n := range names {
		if after := streamConfig(t, js, n); !reflect.DeepEqual(after, before[n]) {
			t.Errorf("%s changed by the second Provision:\nbefore %+v\nafter  %+v", n, before[n], after)
		}
	}

	// The bucket is bound and supports per-key TTL.
	blocks, err := b.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocks.Create(ctx, "k", []byte("v"), jetstream.KeyTTL(time.Minute)); err != nil {
		t.Errorf("create with per-key TTL: %v", err)
	}
}

// TestProvisionIncompatible pre-creates an asset the way an operator might have, and checks
// that Provision names each differing setting and leaves the asset as it was.
func TestProvisionIncompatible(t *testing.T) {
	incident := func(mod func(*jetstream.StreamConfig)) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			cfg := jetstream.StreamConfig{
				Name: broker.DefaultIncidentStream, Subjects: []string{"noname.incidents.>"},
				Storage: jetstream.FileStorage, MaxAge: 90 * 24 * time.Hour, Duplicates: 10 * time.Minute,
			}
			mod(&cfg)
			_, err := js.CreateStream(ctx, cfg)
			return err
		}
	}
	bucket := func(cfg jetstream.KeyValueConfig) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			cfg.Bucket = broker.DefaultBlocksBucket
			_, err := js.CreateKeyValue(ctx, cfg)
			return err
		}
	}
	tests := []struct {
		name     string
		setup    func(context.Context, jetstream.JetStream) error
		stream   string   // the pre-created asset's stream
		settings []string // every setting Provision must name
		message  string
	}{
		{"memory storage", incident(func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }),
			broker.DefaultIncidentStream, []string{"storage"},
			`stream NONAME_INCIDENTS: setting "storage" is memory, blockwire needs file; fix it or point blockwire at another stream name`},
		{"other subjects", incident(func(c *jetstream.StreamConfig) { c.Subjects = []string{"other.>"} }),
			broker.DefaultIncidentStream, []string{"subjects"}, `a subject covering "noname.incidents.>"`},
		{"small duplicate window", incident(func(c *jetstream.StreamConfig) { c.Duplicates = time.Minute }),
			broker.DefaultIncidentStream, []string{"duplicate_window"}, `is 1m0s, blockwire needs at least 10m0s`},
		{"work queue", incident(func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }),
			broker.DefaultIncidentStream, []string{"retention"}, `is workqueue, blockwire needs limits`},
		{"several settings at once", incident(func(c *jetstream.StreamConfig) {
			c.Storage, c.MaxAge, c.Duplicates = jetstream.MemoryStorage, 7*24*time.Hour, 2*time.Minute
		}), broker.DefaultIncidentStream, []string{"storage", "duplicate_window", "max_age"}, `is 7d, blockwire needs at least 90d`},
		{"kv history 5", bucket(jetstream.KeyValueConfig{History: 5, LimitMarkerTTL: time.Minute}),
			blocksStream, []string{"history"}, `kv bucket noname_blocks: setting "history" is 5, blockwire needs 1`},
		{"kv without ttl support", bucket(jetstream.KeyValueConfig{}),
			blocksStream, []string{"allow_msg_ttl", "limit_marker_ttl"}, `another kv bucket name`},
		{"kv with bucket ttl in memory", bucket(jetstream.KeyValueConfig{TTL: time.Hour, Storage: jetstream.MemoryStorage, LimitMarkerTTL: time.Minute}),
			blocksStream, []string{"ttl", "storage"}, `"ttl" is 1h0m0s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			b := open(t, broker.Config{URL: natstest.Start(t).URL()})
			js := b.JetStream()
			if err := tt.setup(ctx, js); err != nil {
				t.Fatalf("setup: %v", err)
			}
			before := streamConfig(t, js, tt.stream)

			err := b.Provision(ctx)
			if !errors.Is(err, broker.ErrIncompatible) {
				t.Fatalf("Provision = %v, want ErrIncompatible", err)
			}
			t.Log(err)
			if got := incompatibleSettings(err); !slices.Equal(got, tt.settings) {
				t.Errorf("settings named = %v, want %v (error: %v)", got, tt.settings, err)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not say %q", err, tt.message)
			}
			if after := streamConfig(t, js, tt.stream); !reflect.DeepEqual(after, before) {
				t.Errorf("Provision changed the asset:\nbefore %+v\nafter  %+v", before, after)
			}
			// The other assets are still created.
			for _, n := range []string{broker.DefaultIncidentStream, broker.DefaultAuditStream, broker.DefaultDLQStream, blocksStream} {
				streamConfig(t, js, n)
			}
		})
	}
}

// A stream whose subjects are wider than ours (and longer-lived, replicated more) is fine.
func TestProvisionAcceptsWiderStream(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, broker.Config{URL: natstest.Start(t).URL()})
	_, err := b.JetStream().CreateStream(ctx, jetstream.StreamConfig{
		Name: broker.DefaultIncidentStream, Subjects: []string{"noname.*.>"},
		Storage: jetstream.FileStorage, Duplicates: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
}

// incompatibleSettings lists the Setting of every *IncompatibleError in a tree of joined errors.
func incompatibleSettings(err error) []string {
	var ie *broker.IncompatibleError
	if errors.As(err, &ie) && err == error(ie) {
		return []string{ie.Setting}
	}
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, incompatibleSettings(e)...)
		}
	}
	return out
}
