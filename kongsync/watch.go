package kongsync

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockwire/blockwire/internal/wait"
	"github.com/nats-io/nats.go/jetstream"
)

// blocksBucket is what the sync needs of the blocks bucket.
type blocksBucket interface {
	WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

var _ blocksBucket = (jetstream.KeyValue)(nil)

// watchBlocks keeps state equal to the bucket until ctx ends. It signals ready once the first
// complete copy is in, and changes (without blocking) after every change. If the watch breaks it
// starts over, building a fresh copy that replaces the old one only when complete.
func (s *Syncer) watchBlocks(ctx context.Context, state *blockState, ready chan<- struct{}, changes chan<- struct{}) error {
	signal := func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	}
	readySent := false
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := s.watchOnce(ctx, state, func() {
			if !readySent {
				readySent = true
				close(ready)
			}
			attempt = 0
		}, signal)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn().Err(err).Msg("watch blocks bucket, restarting")
		if wait.Sleep(ctx, s.cfg.Retry.backoff(min(attempt, 6))) != nil {
			return nil
		}
	}
	return nil
}

func (s *Syncer) openBlocks(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.cfg.JS.KeyValue(ctx, s.cfg.Names.BlocksBucket)
	if err != nil {
		return nil, fmt.Errorf("open blocks bucket %s: %w", s.cfg.Names.BlocksBucket, err)
	}
	return kv, nil
}

// watchOnce runs one watcher until it breaks or ctx ends.
func (s *Syncer) watchOnce(ctx context.Context, state *blockState, loaded func(), signal func()) error {
	kv, err := s.openBlocks(ctx)
	if err != nil {
		return err
	}
	return s.consume(ctx, kv, state, loaded, signal)
}

// consume applies one watcher's entries to state.
func (s *Syncer) consume(ctx context.Context, kv blocksBucket, state *blockState, loaded func(), signal func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch blocks bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	initial := map[string]entry{}
	live := false
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-w.Updates():
		}
		if !ok {
			return errors.New("watcher closed")
		}
		if e == nil { // the end of the current values
			state.replace(initial)
			initial, live = nil, true
			loaded()
			signal()
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			if live {
				state.remove(e.Key())
				signal()
			} else {
				delete(initial, e.Key())
			}
			continue
		}
		en, err := parseEntry(e.Key(), e.Value())
		if err != nil {
			s.log.Warn().Err(err).Str("key", e.Key()).Msg("skip unreadable block")
			continue
		}
		if !live {
			initial[e.Key()] = en
			continue
		}
		state.put(e.Key(), en)
		signal()
	}
}

// loadBlocks reads the bucket once (for Once and the CLI).
func (s *Syncer) loadBlocks(ctx context.Context, state *blockState) error {
	kv, err := s.openBlocks(ctx)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	err = s.consume(lctx, kv, state, func() { close(done); cancel() }, func() {})
	select {
	case <-done:
		return nil
	default:
	}
	if err == nil {
		err = ctx.Err()
	}
	return fmt.Errorf("load blocks: %w", err)
}
