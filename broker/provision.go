package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IncompatibleError says that an existing stream or bucket differs from what blockwire needs in
// one setting. Provision returns one per differing setting, joined.
type IncompatibleError struct {
	Asset   string // "stream" or "kv bucket"
	Name    string // stream or bucket name
	Setting string // the setting's name in the JetStream API, e.g. "storage"
	Have    string // its value on the server
	Want    string // what blockwire needs
}

func (e *IncompatibleError) Error() string {
	return fmt.Sprintf("%s %s: setting %q is %s, blockwire needs %s; fix it or point blockwire at another %s name",
		e.Asset, e.Name, e.Setting, e.Have, e.Want, e.Asset)
}

// Unwrap makes errors.Is(err, ErrIncompatible) true.
func (e *IncompatibleError) Unwrap() error { return ErrIncompatible }

// Provision creates whatever is missing of the incident, audit and DLQ streams and the blocks
// bucket, and checks those that exist. It never updates an existing asset: a stream is the
// audit trail, and silently changing its storage or retention could lose it. Running it again,
// or from several processes at once, is harmless.
//
// Checked on streams (what would break blockwire or lose data, nothing cosmetic):
//   - subjects: some subject filter must cover ours (e.g. "noname.>" covers "noname.incidents.>");
//   - storage: file (memory loses incidents on restart);
//   - retention: limits (work-queue or interest would delete incidents once consumed, but the
//     stream is the log that rebuild and replay read);
//   - duplicate_window: at least ours (shorter stores retried webhooks twice);
//   - max_age: at least ours, or unlimited (longer is an operator's choice and fine);
//   - num_replicas: at least ours;
//   - sealed: false (a sealed stream refuses publishes).
//
// Checked on the bucket: history 1 (one value per block), allow_msg_ttl and limit_marker_ttl
// (per-key TTL and expiry markers for watchers), ttl 0 (a bucket-wide TTL would cut every block
// short), storage file, num_replicas at least ours. Limits such as max_bytes, max_msgs and
// placement are left to operators.
func (b *Broker) Provision(ctx context.Context) error {
	// A cluster that just formed may leave the first requests through a
	// node unanswered: retry those, never an incompatible configuration.
	var errs []error
	for _, want := range b.streamConfigs() {
		errs = append(errs, Retry(ctx, 6, 5*time.Second, func(ctx context.Context) error { return b.ensureStream(ctx, want) }))
	}
	errs = append(errs, Retry(ctx, 6, 5*time.Second, b.ensureBucket))
	return errors.Join(errs...)
}

func (b *Broker) streamConfigs() []jetstream.StreamConfig {
	n := b.names
	stream := func(name, subject, desc string, maxAge, dups time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      maxAge,
			Duplicates:  dups,
			Replicas:    n.Replicas,
		}
	}
	return []jetstream.StreamConfig{
		stream(n.IncidentStream, n.IncidentSubject, "blockwire: every Noname incident received (the log)",
			n.IncidentMaxAge, n.DuplicateWindow),
		stream(n.AuditStream, n.AuditSubject, "blockwire: every action taken, why, from which incident",
			n.AuditMaxAge, AuditDuplicateWindow),
		// Dead letters point at incident sequences; once the incident has aged out they cannot
		// be replayed, so they share its age limit.
		stream(n.DLQStream, n.DLQSubject, "blockwire: incidents that could not be processed",
			n.IncidentMaxAge, AuditDuplicateWindow),
	}
}

func (b *Broker) ensureStream(ctx context.Context, want jetstream.StreamConfig) error {
	s, err := b.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = b.js.CreateStream(ctx, want)
		if err == nil {
			b.log.Info().Str("stream", want.Name).Strs("subjects", want.Subjects).Msg("created stream")
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		// Another process created it in between, with a different config: check theirs.
		s, err = b.js.Stream(ctx, want.Name)
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", want.Name, err)
	}
	return errors.Join(diffStream(s.CachedInfo().Config, want)...)
}

func (b *Broker) ensureBucket(ctx context.Context) error {
	name := b.names.BlocksBucket
	streamName := KVStream(name) // the KV bucket's backing stream
	s, err := b.js.Stream(ctx, streamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		kv, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         name,
			Description:    "blockwire: one key per active block",
			History:        1,
			Storage:        jetstream.FileStorage,
			Replicas:       b.names.Replicas,
			LimitMarkerTTL: BlockMarkerTTL,
		})
		if err == nil {
			b.log.Info().Str("bucket", name).Msg("created kv bucket")
			b.setBlocks(kv)
			return nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("create kv bucket %s: %w", name, err)
		}
		if s, err = b.js.Stream(ctx, streamName); err != nil {
			return fmt.Errorf("look up kv bucket %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look up kv bucket %s: %w", name, err)
	}
	if errs := diffBucket(name, s.CachedInfo().Config, b.names.Replicas); len(errs) > 0 {
		return errors.Join(errs...)
	}
	kv, err := b.js.KeyValue(ctx, name)
	if err != nil {
		return fmt.Errorf("bind kv bucket %s: %w", name, err)
	}
	b.setBlocks(kv)
	return nil
}

func (b *Broker) setBlocks(kv jetstream.KeyValue) {
	b.mu.Lock()
	b.kv = kv
	b.mu.Unlock()
}

// diffStream lists every setting of have that is incompatible with want.
func diffStream(have, want jetstream.StreamConfig) []error {
	var errs []error
	add := func(setting, h, w string) {
		errs = append(errs, &IncompatibleError{Asset: "stream", Name: want.Name, Setting: setting, Have: h, Want: w})
	}
	for _, subj := range want.Subjects {
		if !coveredBy(subj, have.Subjects) {
			add("subjects", fmt.Sprintf("%q", have.Subjects), fmt.Sprintf("a subject covering %q", subj))
		}
	}
	if have.Storage != want.Storage {
		add("storage", lower(have.Storage), lower(want.Storage))
	}
	if have.Retention != want.Retention {
		add("retention", lower(have.Retention), lower(want.Retention))
	}
	if have.Duplicates < want.Duplicates {
		add("duplicate_window", fmtDur(have.Duplicates), "at least "+fmtDur(want.Duplicates))
	}
	if have.MaxAge != 0 && have.MaxAge < want.MaxAge {
		add("max_age", fmtDur(have.MaxAge), "at least "+fmtDur(want.MaxAge)+" or unlimited")
	}
	if have.Replicas < want.Replicas {
		add("num_replicas", strconv.Itoa(have.Replicas), "at least "+strconv.Itoa(want.Replicas))
	}
	if have.Sealed {
		add("sealed", "true", "false")
	}
	return errs
}

// diffBucket lists every setting of the bucket's stream config have that blockwire cannot use.
func diffBucket(bucket string, have jetstream.StreamConfig, replicas int) []error {
	var errs []error
	add := func(setting, h, w string) {
		errs = append(errs, &IncompatibleError{Asset: "kv bucket", Name: bucket, Setting: setting, Have: h, Want: w})
	}
	if have.MaxMsgsPerSubject != 1 {
		add("history", strconv.FormatInt(have.MaxMsgsPerSubject, 10), "1")
	}
	if !have.AllowMsgTTL {
		add("allow_msg_ttl", "false", "true (per-key TTL)")
	}
	if have.SubjectDeleteMarkerTTL <= 0 {
		add("limit_marker_ttl", fmtDur(have.SubjectDeleteMarkerTTL), "at least 1s (expiries visible to watchers)")
	}
	if have.MaxAge != 0 {
		add("ttl", fmtDur(have.MaxAge), "0 (each block carries its own TTL)")
	}
	if have.Storage != jetstream.FileStorage {
		add("storage", lower(have.Storage), lower(jetstream.FileStorage))
	}
	if have.Replicas < replicas {
		add("num_replicas", strconv.Itoa(have.Replicas), "at least "+strconv.Itoa(replicas))
	}
	return errs
}

// coveredBy reports whether one of filters matches every subject that subj (which may end in
// ">") matches, using NATS wildcard rules: "*" is one token, ">" one or more trailing tokens.
func coveredBy(subj string, filters []string) bool {
	s := strings.Split(subj, ".")
	for _, filter := range filters {
		if tokensCover(strings.Split(filter, "."), s) {
			return true
		}
	}
	return false
}

func tokensCover(f, s []string) bool {
	for i, ft := range f {
		if ft == ">" {
			return i < len(s) // ">" needs at least one token, and then takes anything
		}
		if i >= len(s) || s[i] == ">" { // s goes on past a literal or "*" of f
			return false
		}
		if ft != "*" && ft != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

func lower(v fmt.Stringer) string { return strings.ToLower(v.String()) }

// fmtDur prints whole days as "90d", the unit retention is usually thought in.
func fmtDur(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}
