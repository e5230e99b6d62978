package webhook_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/webhook"
)

// benchToken is a whole RS256-shaped token; its "sub" claim is user-8a41c2.
const benchToken = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjIwMjQtMDUta2V5LTEifQ" +
	".eyJpc3MiOiJodHRwczovL2F1dGguc2hvcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJ1c2VyLThhNDFjMiIsImF1ZCI6Im9yZGVycy1hcGkiLCJpYXQiOjE3MTQ1NjEyMDAsImV4cCI6MTcxNDU2NDgwMCwianRpIjoiYzlmN2UwYjQtM2MxZS00YzU1LTlhNTUtMGQzYzZlMWI3ZDIxIiwic2NvcGUiOiJvcmRlcnM6cmVhZCBvcmRlcnM6d3JpdGUifQ" +
	".oofs8Fi3wDCxLsJQxk1KPFoxcV_ICCm2QQgYRLoDAHVjGISRE47q7eperAEAatZkhbPOXiGd2IofNN0abN3PaKKH7PBYt8AwsS7CUMZNSjxaMXFfyAgptkEIGES6AwB1YxiEkROO6u3qXqwBAGrWZIWzzl4hndiKHzTdGmzdz2iih-zwWLfAMLEuwlDGTUo8WjFxX8gIKbZBCBhEugMAdWMYhJETjurt6l6sAQBq1mSFs85eIZ3Yih803Rps3c9ooofs8Fi3wDCxLsJQxk1KPFoxcV_ICCm2QQgYRLoDAHVjGISRE47q7eperAEAatZkhbPOXiGd2IofNN0abN3PaA"

// A typical Noname incident: metadata, unknown fields, addresses, a claim value.
const benchPlain = `{"id":"3f6c1b2e-9d41-4c8a-b7e2-5a1d0c9e8f71","type":"incident","title":"Brute force on login endpoint",
"severity":"high","status":"Open","detectionTime":"2024-05-01T12:03:44.512Z",
"api":{"host":"api.shop.example.com","path":"/v2/auth/login","method":"POST"},
"entities":[{"type":"ip","value":"203.0.113.7"},{"type":"ip","value":"2001:db8:85a3::8a2e:370:7334"},
{"type":"cidr","value":"192.0.2.0/28"},{"type":"jwt","claim":"jti","value":"c9f7e0b4-3c1e-4c55-9a55-0d3c6e1b7d21"}],
"durationSeconds":7200,"scope":{"service":"auth-service","route":"login"},
"nonameIncidentUrl":"https://noname.example.com/incidents/3f6c1b2e",
"triggeredBy":{"ruleId":"BRUTE_FORCE_LOGIN","ruleName":"Excessive failed logins","tags":["owasp-api4"]},"riskScore":87.5}`

// The same incident with one secret of each kind besides the address.
const benchSecrets = `{"id":"3f6c1b2e-9d41-4c8a-b7e2-5a1d0c9e8f72","type":"incident","title":"Credential stuffing",
"severity":"high","status":"Open","detectionTime":"2024-05-01T12:03:44.512Z",
"api":{"host":"api.shop.example.com","path":"/v2/auth/login","method":"POST"},
"entities":[{"type":"ip","value":"203.0.113.7"},
{"type":"header","name":"Authorization","value":"Bearer ` + benchToken + `"},
{"type":"cookie","name":"session","value":"s%3Aq1w2e3r4t5y6u7i8o9p0.abcdefghijklmnopqrstuvwxyz"},
{"type":"query","name":"api_key","value":"AKIA0123456789ABCDEF"},
{"type":"jwt","value":"` + benchToken + `"},
{"type":"jwt","claim":"sub","value":"` + benchToken + `"}],
"durationSeconds":7200,"scope":{"service":"auth-service","route":"login"},
"nonameIncidentUrl":"https://noname.example.com/incidents/3f6c1b2e","riskScore":87.5}`

// nullPublisher acknowledges every message at once, so the benchmarks
// measure the handler and not NATS.
type nullPublisher struct{ seq atomic.Uint64 }

func (p *nullPublisher) PublishMsg(_ context.Context, _ *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{Stream: "NONAME_INCIDENTS", Sequence: p.seq.Add(1)}, nil
}

type alwaysReady struct{}

func (alwaysReady) Ready(context.Context) error { return nil }

// BenchmarkIncident is POST /v1/incidents end to end in process
// (authentication, validation, what is stored, the answer), without NATS.
func BenchmarkIncident(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"no_secrets", benchPlain},
		{"secrets", benchSecrets},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, err := webhook.New(webhook.Config{
				Publisher: &nullPublisher{}, Ready: alwaysReady{}, Registry: prometheus.NewRegistry(),
				Auth: webhook.AuthConfig{Tokens: []string{testToken}}, PublishTimeout: time.Second, Logger: zerolog.Nop(),
			})
			if err != nil {
				b.Fatal(err)
			}
			body := []byte(bc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/incidents", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+testToken)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusAccepted {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
