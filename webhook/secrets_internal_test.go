package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
)

type countingPublisher struct{ n int }

func (p *countingPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.n++
	return &jetstream.PubAck{Sequence: uint64(p.n)}, nil
}

// TestUnstorableSecretAnswers422: should a token the consumer refuses have
// no placeholder refused the same way, the incident is answered 422 naming
// the entity and the reason, and nothing is stored.
func TestUnstorableSecretAnswers422(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pub := &countingPublisher{}
	h := &incidents{pub: pub, subject: "noname.incidents.webhook", publishTimeout: time.Second, log: zerolog.Nop(),
		m: m, now: time.Now, standIns: func(schemas.Entity) []schemas.Entity { return nil }}
	tok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x"}`)) + ".c2ln"
	body := []byte(`{"id":"i-422","entities":[{"type":"ip","value":"192.0.2.1"},{"type":"jwt","claim":"sub","value":"` + tok + `"}]}`)
	req := httptest.NewRequest(http.MethodPost, "/v1/incidents", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(context.WithValue(req.Context(), bodyKey{}, body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnprocessableEntity || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("answered %d %s: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var p problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.Type, "/refused") || len(p.Violations) != 1 || p.Violations[0].Path != "/entities/1/value" ||
		!strings.HasPrefix(p.Violations[0].Message, consumer.ReasonNoClaim+": ") || strings.Contains(w.Body.String(), tok) {
		t.Fatalf("problem %+v, want the entity's path and the consumer's reason, without the token", p)
	}
	if pub.n != 0 {
		t.Fatalf("%d messages published, want none", pub.n)
	}
}

// FuzzStoredForm: for any jwt entity the contract accepts, there is a stored
// form that holds no token (the default placeholders cover every refusal),
// that the contract accepts, and that the consumer keys as the entity
// received, or refuses with the same reason and detail.
func FuzzStoredForm(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	hs := `{"alg":"HS256","typ":"JWT"}`
	for _, c := range []struct{ header, payload, sig, claim string }{
		{hs, `{"sub":"user-1"}`, "c2ln", "sub"},
		{hs, `{"sub":"user-1"}`, "c2ln", ""},
		{hs, `{"uid":1e21}`, "", "uid"},
		{hs, `{"sub":""}`, "c2ln", "sub"},
		{hs, `{"sub":null}`, "c2ln", "sub"},
		{hs, `{"sub":[1]}`, "c2ln", "sub"},
		{hs, `{"sub":"eyJhbGciOiJub25lIn0.e30."}`, "c2ln", "sub"},
		{hs, `not json`, "c2ln", "sub"},
		{`{"typ":"JWT"}`, `{"sub":"u"}`, "c2ln", "sub"},
		{`{"alg":"none"}`, `{"sub":"u"}`, "", "sub"},
		{`{bad`, `{"sub":"u"}`, "c2ln", "sub"},
		{`[1]`, `{"sub":"u"}`, "c2ln", ""},
		{hs, `{"a\"b":"v"}`, "c2ln", `a"b`},
	} {
		f.Add(enc(c.header)+"."+enc(c.payload)+"."+c.sig, c.claim)
	}
	f.Add("YWJj.ZGVm.Z2hp", "")
	f.Add("eyJhbGciOiJub25lIn0=.eyJzdWIiOiJ4In0.", "sub")
	f.Add("user-42", "sub")
	f.Fuzz(func(t *testing.T, value, claim string) {
		e := schemas.Entity{Type: schemas.EntityJWT, Claim: claim, Value: value}
		scope := &schemas.Scope{Service: "svc"}
		body, _ := json.Marshal(schemas.Incident{ID: "f", Entities: []schemas.Entity{e}, Scope: scope})
		inc, err := schemas.ParseIncident(body)
		if err != nil {
			return // refused by the contract: never stored
		}
		e = inc.Entities[0]
		s, changed, err := storedForm(e, scope, &placeholderCache{})
		if err != nil {
			t.Fatalf("no stored form for %+v: %v", e, err)
		}
		if changed && s.Value != "" && strings.Contains(s.Value, e.Value) {
			t.Fatalf("stored %+v holds the value of %+v", s, e)
		}
		stored, _ := json.Marshal(schemas.Incident{ID: "f", Entities: []schemas.Entity{s}, Scope: scope})
		if _, err := schemas.ParseIncident(stored); err != nil {
			t.Fatalf("stored form %+v refused by the contract: %v", s, err)
		}
		k1, err1 := consumer.KeyFor(e, scope)
		k2, err2 := consumer.KeyFor(s, scope)
		if k1 != k2 || (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
			t.Fatalf("received %+v keys to %q (%v), stored %+v to %q (%v)", e, k1, err1, s, k2, err2)
		}
	})
}

// FuzzReplaceEntities: replacing entities in any body the contract accepts
// changes those entities and nothing else a decoder sees.
func FuzzReplaceEntities(f *testing.F) {
	files, _ := filepath.Glob("../testdata/incidents/valid/*.json")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{"api":{"entities":[{"x":"]"}]},"id":"i","entities":[{"type":"ip","value":"192.0.2.1"},{"type":"header","name":"K","value":"v"}]}`,
		`{"entities":[{"type":"ip","value":"192.0.2.9"}],"id":"i","\u0065ntities":[ {"value":"s\"]}","name":"K","type":"cookie"} ]}`,
		`{"id":"i\\\\","title":"\\\"","entities":[{"type":"cookie","name":"c\\\\","value":"\\\\"}],"x":"\\\\\\\"]"}`,
		`{"id":"i","Entities":[1],"entities":[{"type":"query","name":"q","value":"a","value":"b"}],"n":-1.5e3,"t":true}`,
		" \r\n{\"id\" :\"i\" , \"entities\"\t:\n[ {\"type\":\"ip\",\"value\":\"192.0.2.1\"}\n,{\"type\":\"jwt\",\"claim\":\"s\",\"value\":\"v\"} ] }\n",
	} {
		f.Add([]byte(s))
	}
	marker := schemas.Entity{Type: schemas.EntityHeader, Name: "X-<&>\"", ValueSHA256: strings.Repeat("ab", 32)}
	f.Fuzz(func(t *testing.T, body []byte) {
		inc, err := schemas.ParseIncident(body)
		if err != nil {
			return
		}
		stored := map[int]schemas.Entity{}
		for i := range inc.Entities {
			if i%2 == 1 || len(inc.Entities) == 1 {
				stored[i] = marker
			}
		}
		out, err := replaceEntities(body, len(inc.Entities), stored)
		if err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var got, want map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("result is not JSON: %v\n%s", err, out)
		}
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatal(err)
		}
		ents := want["entities"].([]any)
		for i, e := range stored {
			b, _ := json.Marshal(e)
			var m any
			_ = json.Unmarshal(b, &m)
			ents[i] = m
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("replaced\n%s\ninto\n%s", body, out)
		}
		if len(stored) == 0 && !bytes.Equal(out, body) {
			t.Fatalf("nothing replaced, yet the body changed")
		}
	})
}

func TestStorableBodyKeepsPlainBodies(t *testing.T) {
	body := []byte(`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"},{"type":"jwt","claim":"sub","value":"u"}]}`)
	inc, err := schemas.ParseIncident(body)
	if err != nil {
		t.Fatal(err)
	}
	out, err := storableBody(body, inc, nil)
	if err != nil || &out[0] != &body[0] || len(out) != len(body) {
		t.Fatalf("storableBody returned a copy or an error (%v): want the body itself", err)
	}
	// Addresses, ranges, consumers and hashes cost no allocation (a claim
	// value costs the consumer's check that it is not a token).
	body = []byte(`{"id":"i","entities":[{"type":"ip","value":"192.0.2.1"},{"type":"cidr","value":"192.0.2.0/24"},` +
		`{"type":"consumer","value":"c"},{"type":"header","name":"K","valueSha256":"` + strings.Repeat("0", 64) + `"}]}`)
	if inc, err = schemas.ParseIncident(body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = storableBody(body, inc, nil) }); n != 0 {
		t.Fatalf("%v allocations for an incident without secrets, want 0", n)
	}
}
