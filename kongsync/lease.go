package kongsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/wait"
)

// leaseMarkerTTL is the lease bucket's LimitMarkerTTL: setting it is what enables per-key TTL;
// the markers an expired lease leaves are kept this long, then vanish.
const leaseMarkerTTL = time.Minute

// ErrLeaseHeld is returned by Syncer.Once when another process holds the lease.
var ErrLeaseHeld = errors.New("another blockwire holds the kong sync lease")

// errLeaseLost ends a leadership: the key changed under us, or renewals failed for a whole TTL.
var errLeaseLost = errors.New("kong sync lease lost")

// leaseStore is what the lease needs of the bucket and of JetStream.
type leaseStore interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

type msgPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

var (
	_ leaseStore   = (jetstream.KeyValue)(nil)
	_ msgPublisher = (jetstream.JetStream)(nil)
)

// ensureLeaseBucket creates the lease bucket when missing (idempotent, safe from several
// processes at once) and checks that an existing one allows per-key TTL.
func ensureLeaseBucket(ctx context.Context, js jetstream.JetStream, name string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         name,
			Description:    "blockwire: leases (one writer for the Kong sync) and the sync's status",
			History:        1,
			Storage:        jetstream.FileStorage,
			Replicas:       replicas,
			LimitMarkerTTL: leaseMarkerTTL,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %s: %w", name, err)
	}
	st, err := js.Stream(ctx, broker.KVStream(name))
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %s: %w", name, err)
	}
	if !st.CachedInfo().Config.AllowMsgTTL {
		return nil, fmt.Errorf("lease bucket %s exists without per-key TTL (limit_marker_ttl); delete it or configure another name", name)
	}
	return kv, nil
}

// leaseValue is what the lease key holds: who, since when.
type leaseValue struct {
	Holder   string    `json:"holder"`
	Acquired time.Time `json:"acquired"`
}

// lease is the one-writer lock of the Kong sync: a key created with a per-key TTL (so it vanishes
// when its holder dies), renewed every TTL/3 with a compare-and-set on its revision, and deleted
// on a clean shutdown so that another replica takes over at once.
type lease struct {
	kv      leaseStore
	pub     msgPublisher
	subject string // "$KV.<bucket>.<key>", for renewals that carry the TTL
	key     string
	holder  string
	ttl     time.Duration
	log     zerolog.Logger
	now     func() time.Time

	mu        sync.Mutex
	rev       uint64
	acquired  time.Time
	renewedAt time.Time
	held      bool
}

func (l *lease) value() []byte {
	data, _ := json.Marshal(leaseValue{Holder: l.holder, Acquired: l.acquired})
	return data
}

// tryAcquire creates the key; false when someone holds it.
func (l *lease) tryAcquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acquired = l.now().UTC()
	rev, err := l.kv.Create(ctx, l.key, l.value(), jetstream.KeyTTL(l.ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire kong sync lease: %w", err)
	}
	l.rev, l.renewedAt, l.held = rev, l.now(), true
	return true, nil
}

// renew rewrites the key with a fresh TTL, only if it is still ours (its revision unchanged).
// The lock is not held across the round trip, so that valid never waits on the network.
func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	msg := nats.NewMsg(l.subject)
	msg.Data = l.value()
	l.mu.Unlock()
	ack, err := l.pub.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.ttl))
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if broker.WrongLastSeq(err) {
			l.held = false
			return fmt.Errorf("%w: the key changed (expired, or taken by another holder)", errLeaseLost)
		}
		return fmt.Errorf("renew kong sync lease: %w", err)
	}
	l.rev, l.renewedAt = ack.Sequence, l.now()
	return nil
}

// valid reports whether this process may write: it holds the lease and renewed it recently
// enough that no one else can have taken it over. A fifth of the TTL is kept as a margin for
// clock rate differences and the server's one-second TTL resolution.
func (l *lease) valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && l.now().Sub(l.renewedAt) < l.ttl-l.ttl/5
}

// release deletes the key if still ours, so that a successor need not wait for the TTL.
func (l *lease) release(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return
	}
	l.held = false
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		l.log.Warn().Err(err).Msg("release kong sync lease; it expires by itself")
	}
}

// currentHolder reads who holds the lease ("" when nobody does).
func (l *lease) currentHolder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read kong sync lease: %w", err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return "", fmt.Errorf("read kong sync lease: %w", err)
	}
	return v.Holder, nil
}

// run campaigns for the lease until ctx ends, and runs lead while holding it. lead's context is
// cancelled when the lease is lost; lead must then return promptly.
func (l *lease) run(ctx context.Context, lead func(ctx context.Context) error) {
	every := l.ttl / 3
	var lastErr string
	for ctx.Err() == nil {
		ok, err := l.tryAcquire(ctx)
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			lastErr = err.Error() // once per distinct failure: NATS may be down for a while
			l.log.Warn().Err(err).Msg("acquire kong sync lease, retrying")
		}
		if !ok {
			if wait.Sleep(ctx, every) != nil {
				return
			}
			continue
		}
		lastErr = ""
		l.log.Info().Str("holder", l.holder).Dur("ttl", l.ttl).Msg("kong sync lease acquired: this process writes to Kong")
		if err := l.hold(ctx, lead); err != nil {
			l.log.Error().Err(err).Msg("kong sync leadership ended")
			_ = wait.Sleep(ctx, l.ttl) // let another replica try before this one again
		}
	}
}

// hold runs lead and renews the lease until ctx ends, lead returns, or the lease is lost.
func (l *lease) hold(ctx context.Context, lead func(ctx context.Context) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- lead(lctx) }()
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	stop := func() {
		cancel()
		<-done
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		l.release(rctx)
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			l.log.Info().Msg("kong sync lease released")
			return nil
		case err := <-done:
			done <- err // stop waits on it
			stop()
			return err
		case <-tick.C:
			err := l.renew(ctx)
			if err == nil {
				continue
			}
			if errors.Is(err, errLeaseLost) || !l.valid() {
				l.mu.Lock()
				l.held = false
				l.mu.Unlock()
				cancel()
				<-done
				l.log.Warn().Err(err).Msg("kong sync lease lost; stopped writing to Kong")
				return nil
			}
			l.log.Warn().Err(err).Msg("renew kong sync lease, retrying")
		}
	}
}
