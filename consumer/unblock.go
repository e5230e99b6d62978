package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// Incidents are applied in parallel and redelivered after failures, so a block and an unblock
// of one key may arrive out of the log's order. Both keep to it by stream sequence: an unblock
// leaves alone a block made or extended by a later incident, and it leaves a purge marker that
// records its sequence (even when there was nothing to remove), so a block from an earlier
// incident arriving afterwards does not bring the key back, for as long as the marker lives
// (markerTTL).

// unblock removes the key for the incident at seq; a key that is not there is reported, not an
// error.
func (s *store) unblock(ctx context.Context, t target, seq uint64) (outcome, error) {
	for range 16 {
		entry, err := s.get(ctx, t.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			marked, err := s.markUnblocked(ctx, t.key, seq)
			if err != nil {
				return outcome{}, err
			}
			if !marked { // a block appeared meanwhile
				continue
			}
			return outcome{}, refuse(ReasonNotBlocked, "%s is not blocked", t.key)
		}
		if err != nil {
			return outcome{}, fmt.Errorf("read block %s: %w", t.key, err)
		}
		var cur schemas.Block
		if json.Unmarshal(entry.Value(), &cur) == nil {
			if later := max(cur.CreatedSeq, cur.UpdatedSeq); later > seq {
				return outcome{}, refuse(ReasonSuperseded, "%s was blocked again by a later incident (seq %d)", t.key, later)
			}
		}
		err = s.publishUnblock(ctx, t.key, seq, entry.Revision())
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return outcome{}, err
		}
		s.ceiling.removed()
		return outcome{schemas.ActionUnblocked, "removed"}, nil
	}
	return outcome{}, fmt.Errorf("remove block %s: %w after 16 attempts", t.key, errConflict)
}

// publishUnblock purges key (its history goes; the marker itself expires after markerTTL instead
// of piling up one tombstone per unblock), provided the key's last message is still at revision
// expect (0: none); the marker records seq. errConflict when the key moved on.
func (s *store) publishUnblock(ctx context.Context, key string, seq, expect uint64) error {
	m := nats.NewMsg(s.putPrefix + key)
	m.Header.Set(kvOperation, "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Header.Set(schemas.HeaderUnblockSeq, strconv.FormatUint(seq, 10))
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	_, err := s.pub.PublishMsg(ctx, m, jetstream.WithMsgTTL(s.markerTTL), jetstream.WithExpectLastSequencePerSubject(expect))
	if broker.WrongLastSeq(err) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("remove block %s: %w", key, err)
	}
	return nil
}

// markUnblocked leaves the marker of an unblock at seq on a key that holds no block, unless a
// marker of a later unblock is there already. It reports false when a block appeared meanwhile.
func (s *store) markUnblocked(ctx context.Context, key string, seq uint64) (bool, error) {
	if s.last == nil {
		return true, nil
	}
	m, err := s.lastMsg(ctx, key)
	if err != nil {
		return false, err
	}
	var expect uint64
	if m != nil {
		if !isMarker(m.Header) {
			return false, nil
		}
		if unblockSeq(m.Header) >= seq {
			return true, nil
		}
		expect = m.Sequence
	}
	err = s.publishUnblock(ctx, key, seq, expect)
	if errors.Is(err, errConflict) {
		return false, nil
	}
	return err == nil, err
}

// unblockedAfter reports the sequence of the incident that unblocked key, when that is later
// than seq; 0 when the key's last message is not such an unblock's marker.
func (s *store) unblockedAfter(ctx context.Context, key string, seq uint64) (uint64, error) {
	if s.last == nil {
		return 0, nil
	}
	m, err := s.lastMsg(ctx, key)
	if err != nil || m == nil || !isMarker(m.Header) {
		return 0, err
	}
	if by := unblockSeq(m.Header); by > seq {
		return by, nil
	}
	return 0, nil
}

// lastMsg is the last message on key's subject, markers included; nil when there is none.
func (s *store) lastMsg(ctx context.Context, key string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	m, err := s.last.GetLastMsgForSubject(ctx, s.putPrefix+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last record of %s: %w", key, err)
	}
	return m, nil
}

// isMarker: a removal (delete or purge) or an expiry marker, not a block.
func isMarker(h nats.Header) bool {
	return h.Get(kvOperation) != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// unblockSeq is the sequence an unblock's marker records; 0 for any other message.
func unblockSeq(h nats.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(schemas.HeaderUnblockSeq), 10, 64)
	return n
}
