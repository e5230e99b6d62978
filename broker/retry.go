package broker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry runs op, each attempt bounded by attemptTimeout, until it succeeds,
// fails for good, or attempts run out. Only failures that another attempt
// may cure are retried: an unanswered request, no responders — what a
// JetStream cluster that just formed, or just lost a leader, answers for a
// moment.
func Retry(ctx context.Context, attempts int, attemptTimeout time.Duration, op func(ctx context.Context) error) error {
	var err error
	wait := 250 * time.Millisecond
	for i := range attempts {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err = op(actx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil || i == attempts-1 {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
	return err
}

// Transient reports whether err may pass on its own: a request nobody
// answered in time, or nobody to answer it yet.
func Transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// WrongLastSeq reports whether a publish guarded by an expected last
// sequence (a key's revision) was refused because the key had moved on:
// another writer, or an expiry, got there first.
func WrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
