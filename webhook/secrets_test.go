package webhook_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

// token builds a compact JWT from a JSON header and payload (not signed: the
// consumer never verifies).
func token(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + ".c2lnbmF0dXJl"
}

// incidentWith is an incident carrying ent after an address, with a scope,
// unknown top-level fields (one nested, one null) and an api object with a
// field of its own.
func incidentWith(id, ent string) string {
	return `{"id":"` + id + `","type":"block","title":"Secrets <&> \u00e9",` +
		"\n  " + `"api":{"host":"api.example.com","extra":{"deep":[1,2.50,"x"]}},` +
		`"entities":[ {"type":"ip","value":"203.0.113.9"} ,` + "\n\t" + ent + `],` +
		`"scope":{"service":"orders"},"nonameIncidentUrl":"https://noname.example.com/i/1",` +
		`"triggeredBy":{"ruleId":"R1","tags":["a"]},"riskScore":87.50,"detectionTimeZone":null}`
}

// storedMessage reads the incident stored at seq.
func (e *env) storedMessage(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.broker.Names().IncidentStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("get stored message %d: %v", seq, err)
	}
	return msg
}

// post posts an incident to the webhook, wants 202, and returns the stored message.
func (e *env) post(t *testing.T, body string) (response, *jetstream.RawStreamMsg) {
	t.Helper()
	r := do(t, e.signedRequest(t, []byte(body)))
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %v", r.status, r.body)
	}
	return r, e.storedMessage(t, uint64(r.body["seq"].(float64)))
}

// topLevel decodes the members of a JSON object, each as its raw bytes.
func topLevel(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return m
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestIncidentSecretsAreNotStored posts one incident per kind of secret to
// /v1/incidents and reads back what the stream holds: no raw secret, every
// other field as received, the secret by hash (or a token by its claim's
// value), and the block key the consumer derives unchanged.
func TestIncidentSecretsAreNotStored(t *testing.T) {
	numeric := token(`{"alg":"HS256","typ":"JWT"}`, `{"uid":12345,"sub":"user-9"}`)
	tests := []struct {
		name   string
		entity string
		secret string // must not be in the stored message
		hashed bool   // stored as valueSha256 of secret, else as value want
		want   string
	}{
		{"header", `{"type":"header","name":"X-Api-Key","value":"k-secret-header-1"}`, "k-secret-header-1", true, ""},
		{"header name in capitals, value a bearer token", `{"type":"header","name":"AUTHORIZATION","value":"Bearer ` + benchToken + `"}`,
			"Bearer " + benchToken, true, ""},
		{"header value with escapes", `{"type":"header","name":"X-K","value":"v\"<&>\u00e9\\/\ud83d\ude00"}`, "v\"<&>é\\/😀", true, ""},
		{"cookie", `{"type":"cookie","name":"session","value":"s%3Asecret-cookie-2"}`, "s%3Asecret-cookie-2", true, ""},
		{"query", `{"type":"query","name":"api_key","value":"q-secret-query-3"}`, "q-secret-query-3", true, ""},
		{"whole token", `{"type":"jwt","value":"` + benchToken + `"}`, benchToken, true, ""},
		{"whole token, keys in another order", `{"value":"` + numeric + `","type":"jwt"}`, numeric, true, ""},
		{"claim of a token", `{"type":"jwt","claim":"sub","value":"` + benchToken + `"}`, benchToken, false, "user-8a41c2"},
		{"numeric claim of a token", `{"claim":"uid","type":"jwt","value":"` + numeric + `"}`, numeric, false, "12345"},
		{"escaped key names", `{"type":"cookie","n\u0061me":"sid","v\u0061lue":"escaped-secret-5"}`, "escaped-secret-5", true, ""},
	}
	e := newEnv(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := incidentWith(fmt.Sprintf("inc-secret-%d", i), tt.entity)
			posted, err := schemas.ParseIncident([]byte(body))
			if err != nil {
				t.Fatalf("test incident: %v", err)
			}
			r, msg := e.post(t, body)
			if r.body["duplicate"] != false || r.body["id"] != posted.ID {
				t.Fatalf("answer %v, want id %s not duplicate", r.body, posted.ID)
			}
			if bytes.Contains(msg.Data, []byte(tt.secret)) || bytes.Contains(msg.Data, []byte(strings.Trim(tt.entity, "{}"))) {
				t.Fatalf("the stored message holds the secret: %s", msg.Data)
			}
			if got, want := msg.Header.Get(jetstream.MsgIDHeader), webhook.MsgID(posted, []byte(body)); got != want {
				t.Errorf("Nats-Msg-Id %s, want %s (the digest of the body as received)", got, want)
			}
			// Everything but the entity is kept byte for byte.
			sent, kept := topLevel(t, []byte(body)), topLevel(t, msg.Data)
			if !slices.Equal(slices.Sorted(maps.Keys(sent)), slices.Sorted(maps.Keys(kept))) {
				t.Fatalf("stored fields %v, want %v", slices.Sorted(maps.Keys(kept)), slices.Sorted(maps.Keys(sent)))
			}
			for k, v := range sent {
				if k != "entities" && !bytes.Equal(v, kept[k]) {
					t.Errorf("field %s stored as %s, want %s", k, kept[k], v)
				}
			}
			first := `{"id":"` + posted.ID + `","type":"block","title":"Secrets <&> \u00e9",` + "\n  "
			if !bytes.HasPrefix(msg.Data, []byte(first)) || !bytes.HasSuffix(msg.Data, []byte(body[strings.LastIndexByte(body, ']'):])) {
				t.Errorf("the bytes around the entities changed: %s", msg.Data)
			}
			stored, err := schemas.ParseIncident(msg.Data)
			if err != nil {
				t.Fatalf("the stored message is not a valid incident: %v\n%s", err, msg.Data)
			}
			if len(stored.Entities) != 2 || stored.Entities[0] != posted.Entities[0] {
				t.Fatalf("stored entities %+v, want the address kept", stored.Entities)
			}
			got, sentEnt := stored.Entities[1], posted.Entities[1]
			switch {
			case tt.hashed && (got.Value != "" || got.ValueSHA256 != sha256Hex(sentEnt.Value)):
				t.Errorf("stored %+v, want the SHA-256 of the value", got)
			case !tt.hashed && (got.ValueSHA256 != "" || got.Value != tt.want || got.Claim != sentEnt.Claim):
				t.Errorf("stored %+v, want claim %s with value %q", got, sentEnt.Claim, tt.want)
			}
			keySent, err := consumer.KeyFor(sentEnt, posted.Scope)
			if err != nil {
				t.Fatalf("key of the posted entity: %v", err)
			}
			keyStored, err := consumer.KeyFor(got, stored.Scope)
			if err != nil || keyStored != keySent {
				t.Errorf("the consumer keys the stored entity %s (%v), the posted one %s", keyStored, err, keySent)
			}
			if again := do(t, e.signedRequest(t, []byte(body))); again.body["duplicate"] != true || again.body["seq"] != r.body["seq"] {
				t.Errorf("a retry answered %v, want a duplicate of seq %v", again.body, r.body["seq"])
			}
		})
	}
}

// TestSampleIncidentsStoredWithoutSecrets posts every valid sample: those
// without a secret are stored byte for byte; the others hold none of their
// secrets once stored, and the consumer keys each entity as before.
func TestSampleIncidentsStoredWithoutSecrets(t *testing.T) {
	e := newEnv(t, nil)
	files, err := filepath.Glob("../testdata/incidents/valid/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample incidents (%v)", err)
	}
	plain, secret := 0, 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, inc := readIncident(t, f)
			var secrets []string
			for _, ent := range inc.Entities {
				if isSecret(ent) {
					secrets = append(secrets, ent.Value)
				}
			}
			_, msg := e.post(t, string(body))
			if len(secrets) == 0 {
				plain++
				if !bytes.Equal(msg.Data, body) {
					t.Fatalf("an incident without secrets was stored as\n%s\nwant the body as received\n%s", msg.Data, body)
				}
				return
			}
			secret++
			for _, s := range secrets {
				if bytes.Contains(msg.Data, []byte(s)) {
					t.Errorf("stored %s holds the secret %q", msg.Data, s)
				}
			}
			stored, err := schemas.ParseIncident(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			for i, ent := range inc.Entities {
				want, errWant := consumer.KeyFor(ent, inc.Scope)
				got, errGot := consumer.KeyFor(stored.Entities[i], stored.Scope)
				if got != want || fmt.Sprint(errGot) != fmt.Sprint(errWant) {
					t.Errorf("entity %d: stored key %s (%v), posted key %s (%v)", i, got, errGot, want, errWant)
				}
			}
		})
	}
	if plain == 0 || secret == 0 {
		t.Fatalf("%d samples without secrets and %d with: want both", plain, secret)
	}
}

// isSecret says, independently of the webhook, whether an entity carries a
// secret: a header, cookie or query value, a whole token, or a token given
// for one of its claims.
func isSecret(e schemas.Entity) bool {
	switch {
	case e.Value == "":
		return false
	case e.Type.HasName(), e.Type == schemas.EntityJWT && e.Claim == "":
		return true
	case e.Type == schemas.EntityJWT:
		return strings.Count(e.Value, ".") == 2 && strings.HasPrefix(e.Value, "eyJ")
	}
	return false
}

// TestIncidentWithoutSecretsStoredAsReceived: addresses, ranges, consumers,
// claim values and secrets already given by hash are stored byte for byte,
// however the JSON is spelled.
func TestIncidentWithoutSecretsStoredAsReceived(t *testing.T) {
	e := newEnv(t, nil)
	bodies := []string{
		benchPlain,
		withEntities(1000),
		incidentWith("plain-1", `{"type":"consumer","value":"mobile-app"}`),
		incidentWith("plain-2", `{"type":"jwt","claim":"sub","value":"user-42"}`),
		incidentWith("plain-3", `{"type":"header","name":"X-Api-Key","valueSha256":"`+sha256Hex("k-1")+`"}`),
		incidentWith("plain-4", `{"valueSha256":"`+sha256Hex(benchToken)+`","type":"jwt"}`),
		incidentWith("plain-5", `{"type":"cidr","value":"2001:db8::/48"}`),
		"\n  {\"entities\" : [ { \"value\" : \"::ffff:192.0.2.1\" , \"type\" : \"ip\" } ] ,\n \"id\":\"plain-6\" }  \n",
	}
	for i, body := range bodies {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, msg := e.post(t, body)
			if string(msg.Data) != body {
				t.Fatalf("stored\n%s\nwant the body as received\n%s", msg.Data, body)
			}
		})
	}
}

// TestTokenRefusalsStoredAsPlaceholders: a jwt entity the consumer refuses
// (a claim it cannot read from the token, a whole token it cannot read) is
// stored as a placeholder token that the consumer refuses for the same
// reason, not as the token: the incident is stored (202) and applied, that
// one entity audited as refused, the others blocked, nothing dead-lettered.
func TestTokenRefusalsStoredAsPlaceholders(t *testing.T) {
	hs := `{"alg":"HS256","typ":"JWT"}`
	enc := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name, entity, tok, reason string
	}{
		{"claims not JSON", "sub", enc([]byte(hs)) + "." + enc([]byte("not json")) + ".c2ln", consumer.ReasonNotJWT},
		{"claims not an object", "sub", token(hs, `["sub"]`), consumer.ReasonNotJWT},
		{"no such claim", "sub", token(hs, `{"iss":"https://idp.example.com","aud":"a-2"}`), consumer.ReasonNoClaim},
		{"empty claim", "sub", token(hs, `{"sub":"","aud":"a-3"}`), consumer.ReasonNoClaim},
		{"null claim", "jti", token(hs, `{"jti":null,"aud":"a-4"}`), consumer.ReasonNoClaim},
		{"object claim", "client_id", token(hs, `{"client_id":{"a":1},"aud":"a-5"}`), consumer.ReasonNoClaim},
		{"claim holding a token", "act", token(hs, `{"act":"`+benchToken+`"}`), consumer.ReasonInvalid},
		{"no algorithm", "sub", token(`{"typ":"JWT"}`, `{"sub":"user-1"}`), consumer.ReasonNotJWT},
		{"unknown algorithm", "sub", token(`{"alg":"XX512"}`, `{"sub":"user-1"}`), consumer.ReasonNotJWT},
		{"claim name with quotes", `a"b`, token(hs, `{"x":1,"aud":"a-9"}`), consumer.ReasonNoClaim},
		{"whole token whose header is not JSON", "", "YWJjZGVm.eyJzdWIiOiJ1In0.c2ln", consumer.ReasonNotJWT},
	}
	e := newEnv(t, nil)
	e.runConsumer(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			posted := schemas.Entity{Type: schemas.EntityJWT, Claim: tt.entity, Value: tt.tok}
			ent, _ := json.Marshal(posted)
			body := incidentWith(fmt.Sprintf("inc-refused-%d", i), string(ent))
			inc, err := schemas.ParseIncident([]byte(body))
			if err != nil {
				t.Fatalf("test incident: %v", err)
			}
			_, want := consumer.KeyFor(inc.Entities[1], inc.Scope)
			if want == nil || !strings.HasPrefix(want.Error(), tt.reason+": ") {
				t.Fatalf("the consumer refuses the posted entity with %v, want %s", want, tt.reason)
			}
			r, msg := e.post(t, body)
			payload := strings.Split(tt.tok, ".")[1]
			if bytes.Contains(msg.Data, []byte(tt.tok)) || bytes.Contains(msg.Data, []byte(payload)) {
				t.Fatalf("the stored message holds the token: %s", msg.Data)
			}
			stored, err := schemas.ParseIncident(msg.Data)
			if err != nil {
				t.Fatalf("stored message refused by the contract (it would be dead-lettered): %v\n%s", err, msg.Data)
			}
			got := stored.Entities[1]
			if got.Type != schemas.EntityJWT || got.Claim != posted.Claim || got.ValueSHA256 != "" {
				t.Fatalf("stored %+v, want a jwt entity with claim %q and a value", got, posted.Claim)
			}
			if _, err := consumer.KeyFor(got, stored.Scope); err == nil || err.Error() != want.Error() {
				t.Fatalf("the consumer refuses the stored entity with %v, want %v", err, want)
			}
			// Applied: the address blocked, the token refused with the same detail.
			seq := uint64(r.body["seq"].(float64))
			eventually(t, func() error {
				recs := e.auditOf(t, seq)
				var refused, blocked int
				for _, rec := range recs {
					switch {
					case rec.Action == schemas.ActionRefused && rec.Detail == want.Error():
						refused++
					case rec.Kind == schemas.EntityIP && (rec.Action == schemas.ActionBlocked || rec.Action == schemas.ActionExtended):
						blocked++
					case rec.Action == schemas.ActionRefused:
						return fmt.Errorf("refused with %q, want %q", rec.Detail, want.Error())
					}
				}
				if refused != 1 || blocked != 1 {
					return fmt.Errorf("audit of seq %d: %+v; want one refusal and the address blocked", seq, recs)
				}
				return nil
			})
		})
	}
	if n := e.streamCount(t, e.broker.Names().DLQStream); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// auditOf returns the audit records of the incident stored at seq.
func (e *env) auditOf(t *testing.T, seq uint64) []schemas.AuditRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.broker.Names().AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.AuditRecord
	for n := info.State.FirstSeq; n <= info.State.LastSeq && info.State.Msgs > 0; n++ {
		msg, err := s.GetMsg(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		var rec schemas.AuditRecord
		if err := json.Unmarshal(msg.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.EventSeq == seq {
			out = append(out, rec)
		}
	}
	return out
}

func (e *env) streamCount(t *testing.T, name string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
