package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

const webhookToken = "faults-token-0123456789abcdef"

// maxEntities is how many distinct entities the generator can spell: every incident of a run
// names its own, so each block key has exactly one incident asking for it.
const maxEntities = 1 << 16

// burst is a set of incidents with distinct ids and distinct entities (1–3 each), of every kind.
type burst struct {
	name      string
	incidents []schemas.Incident
	bodies    [][]byte
	keys      [][]string // block keys each incident asks for, by consumer.KeyFor
}

// newBurst generates n incidents named <name>-<i>, whose entities are numbered from first.
// It returns the next free entity number, for another burst of the same run.
func newBurst(t *testing.T, name string, n, first int) (*burst, int) {
	t.Helper()
	b := &burst{name: name}
	e := first
	for i := range n {
		d := int64(3600)
		inc := schemas.Incident{
			ID: fmt.Sprintf("%s-%06d", name, i), Type: schemas.TypeBlock, Title: "fault injection",
			Severity: schemas.SeverityHigh, DurationSeconds: &d,
		}
		var keys []string
		for range 1 + i%3 {
			ent := entity(t, e)
			e++
			key, err := consumer.KeyFor(ent, nil)
			if err != nil {
				t.Fatalf("key of %+v: %v", ent, err)
			}
			inc.Entities = append(inc.Entities, ent)
			keys = append(keys, key)
		}
		body, err := json.Marshal(inc)
		if err != nil {
			t.Fatal(err)
		}
		b.incidents = append(b.incidents, inc)
		b.bodies = append(b.bodies, body)
		b.keys = append(b.keys, keys)
	}
	return b, e
}

// entity number e, spelled the same way every time and different from every other number.
// Addresses stay clear of the outage scenario's probes (203.0.113.0/24) and of loopback.
func entity(t *testing.T, e int) schemas.Entity {
	t.Helper()
	if e >= maxEntities {
		t.Fatalf("entity %d: the generator spells at most %d", e, maxEntities)
	}
	hi, lo := e>>8, e&0xff
	switch e % 8 {
	case 0:
		return schemas.Entity{Type: schemas.EntityIP, Value: fmt.Sprintf("198.18.%d.%d", hi, lo)}
	case 1:
		return schemas.Entity{Type: schemas.EntityIP, Value: fmt.Sprintf("2001:db8:fa::%x", e)}
	case 2:
		return schemas.Entity{Type: schemas.EntityCIDR, Value: fmt.Sprintf("10.%d.%d.0/24", hi, lo)}
	case 3:
		return schemas.Entity{Type: schemas.EntityHeader, Name: "X-Api-Key", Value: fmt.Sprintf("key-%d", e)}
	case 4:
		return schemas.Entity{Type: schemas.EntityCookie, Name: "session", Value: fmt.Sprintf("s-%d", e)}
	case 5:
		return schemas.Entity{Type: schemas.EntityQuery, Name: "token", Value: fmt.Sprintf("q-%d", e)}
	case 6:
		return schemas.Entity{Type: schemas.EntityJWT, Claim: "sub", Value: fmt.Sprintf("user-%d", e)}
	default:
		return schemas.Entity{Type: schemas.EntityConsumer, Value: fmt.Sprintf("consumer-%d", e)}
	}
}

// attempt is one POST /v1/incidents and its answer.
type attempt struct {
	incident   int // index in the burst
	start, end time.Time
	status     int    // 0: no HTTP answer (connection refused, reset, timeout)
	err        string // the transport error, when status is 0
	retryAfter string
	accepted   webhook.Accepted // the 202's body
}

// poster sends incidents to one webhook and records every attempt.
type poster struct {
	api    string
	client *http.Client

	mu       sync.Mutex
	attempts []attempt
}

func newPoster(api string, conns int) *poster {
	return &poster{api: api, client: &http.Client{
		// Longer than serve's publish timeout (5 s): an answer is always waited for.
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
		},
	}}
}

// post sends body once and records what came back.
func (p *poster) post(i int, body []byte) attempt {
	a := attempt{incident: i, start: time.Now()}
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/incidents", bytes.NewReader(body))
	if err != nil {
		panic(err) // the URL is ours
	}
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		a.end, a.err = time.Now(), err.Error()
	} else {
		data, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.end, a.status, a.retryAfter = time.Now(), resp.StatusCode, resp.Header.Get("Retry-After")
		switch {
		case rerr != nil:
			a.status, a.err = 0, "read answer: "+rerr.Error() // an answer cut short proves nothing
		case a.status == http.StatusAccepted:
			if err := json.Unmarshal(data, &a.accepted); err != nil || a.accepted.Seq == 0 {
				a.status, a.err = 0, fmt.Sprintf("202 with an unreadable body %q", data)
			}
		}
	}
	p.mu.Lock()
	p.attempts = append(p.attempts, a)
	p.mu.Unlock()
	return a
}

// snapshot returns a copy of the attempts so far.
func (p *poster) snapshot() []attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]attempt(nil), p.attempts...)
}

// tally counts attempts by outcome.
type tally struct {
	attempts, accepted, duplicates, unavailable, noRetryAfter, transport, other int
}

func count(as []attempt) tally {
	var c tally
	for _, a := range as {
		c.attempts++
		switch a.status {
		case http.StatusAccepted:
			c.accepted++
			if a.accepted.Duplicate {
				c.duplicates++
			}
		case http.StatusServiceUnavailable:
			c.unavailable++
			if a.retryAfter == "" {
				c.noRetryAfter++
			}
		case 0:
			c.transport++
		default:
			c.other++
		}
	}
	return c
}

func (c tally) String() string {
	return fmt.Sprintf("%d attempts: %d × 202 (%d duplicate), %d × 503 (%d without Retry-After), %d without an answer, %d other",
		c.attempts, c.accepted, c.duplicates, c.unavailable, c.noRetryAfter, c.transport, c.other)
}

// acceptedSeqs maps each incident that got a 202 to the sequence the answer gave (the same
// for every 202 of one incident, or the incident was stored twice: checked by the caller).
func acceptedSeqs(t *testing.T, b *burst, as []attempt) map[int]uint64 {
	t.Helper()
	seqs := make(map[int]uint64)
	for _, a := range as {
		if a.status != http.StatusAccepted {
			continue
		}
		if a.accepted.ID != b.incidents[a.incident].ID {
			t.Errorf("incident %s answered 202 for id %q", b.incidents[a.incident].ID, a.accepted.ID)
		}
		if prev, ok := seqs[a.incident]; ok && prev != a.accepted.Seq {
			t.Errorf("incident %s answered 202 with seq %d and with seq %d: stored twice", b.incidents[a.incident].ID, prev, a.accepted.Seq)
		}
		seqs[a.incident] = a.accepted.Seq
	}
	return seqs
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
