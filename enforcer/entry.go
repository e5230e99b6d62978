package enforcer

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// entryOp turns a bucket entry into an index change. Everything the index matches on is in
// the key (kind, scope, name, canonical value or hash); the value is read only for
// expiresAt.
func entryOp(e jetstream.KeyValueEntry) (op, error) {
	parts, err := schemas.ParseBlockKey(e.Key())
	if err != nil {
		return op{}, err
	}
	if e.Operation() != jetstream.KeyValuePut {
		return op{del: true, parts: parts}, nil // delete, purge, or the server's expiry marker
	}
	return op{parts: parts, exp: expiresAt(e.Value())}, nil
}

var expiresAtField = []byte(`"expiresAt":"`)

// expiresAt reads a block's expiresAt as Unix milliseconds, rounded up so a block never
// ends before its time. Decoding the whole value with encoding/json costs about 3µs, which
// over a million blocks is seconds of a cold start; the field is found by a scan instead
// (the sequence cannot occur inside a JSON string, whose quotes are escaped), with
// encoding/json as the fallback. A value without a readable expiresAt still blocks, until
// its key goes: the key alone says what to block.
func expiresAt(v []byte) int64 {
	if i := bytes.Index(v, expiresAtField); i >= 0 {
		rest := v[i+len(expiresAtField):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(time.RFC3339Nano, bytesString(rest[:j])); err == nil {
				return ceilMilli(t)
			}
		}
	}
	var b struct {
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if json.Unmarshal(v, &b) == nil && !b.ExpiresAt.IsZero() {
		return ceilMilli(b.ExpiresAt)
	}
	return noExpiry
}

func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}
