package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

const webhookToken = "cluster-test-token-0123456789"

// names are the assets at three replicas; every other field is blockwire's default.
var names = broker.Names{Replicas: 3}

// replica is one `blockwire serve` as internal/app wires it — broker, Provision, webhook and
// consumer — but in this process, so the test can read its metrics and stop it.
//
// Its consumer runs under a supervisor, as serve runs under compose's `restart: unless-stopped`:
// when Run returns before the test ends (serve would exit), the exit is recorded and the
// consumer started again a second later.
type replica struct {
	name string
	b    *broker.Broker
	url  string // the webhook

	mu    sync.Mutex
	regs  []*prometheus.Registry // one per consumer run (a metric registers once)
	exits []exit

	done chan struct{} // closed when the supervisor stopped
}

// exit is a consumer Run that ended while the test was running.
type exit struct {
	at  time.Time
	err error
}

// openOn opens a broker on every node's URL and keeps the one that reached prefer.
//
// serve takes a comma-separated list (BLOCKWIRE_NATS_URL) and nats.go shuffles it (broker sets
// no DontRandomize), so "this replica lives next to node X" cannot be configured; the test
// reopens until the shuffle lands on prefer. Reconnects still pick among all three.
func openOn(tb testing.TB, c *cluster, prefer *node, connName string) *broker.Broker {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 60 {
		b, err := broker.Open(ctx, broker.Config{URL: c.URLs(prefer), Names: names, Name: connName})
		if err != nil {
			tb.Fatalf("open broker %s: %v", connName, err)
		}
		if b.Conn().ConnectedServerName() == prefer.name {
			tb.Cleanup(func() {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = b.Close(cctx)
			})
			return b
		}
		_ = b.Close(ctx)
	}
	tb.Fatalf("open broker %s: never connected to %s in 60 tries", connName, prefer.name)
	return nil
}

// startReplica runs a serve replica whose NATS connection starts on prefer.
func startReplica(tb testing.TB, c *cluster, name string, prefer *node, ackWait time.Duration) *replica {
	tb.Helper()
	ctx := context.Background()
	b := openOn(tb, c, prefer, "serve-"+name)
	if err := b.Provision(ctx); err != nil { // as serve does at every start
		tb.Fatalf("replica %s: provision: %v", name, err)
	}
	r := &replica{name: name, b: b, done: make(chan struct{})}
	log := zerolog.New(c.logs.writer("replica-" + name)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	lister, err := consumer.NewLister(b.JetStream(), b.Names().BlocksBucket, nil)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := webhook.New(webhook.Config{
		Publisher: b.JetStream(), Ready: b, Connected: b.Conn().IsConnected,
		Subject:  b.Names().IncidentSubject + ".webhook",
		Auth:     webhook.AuthConfig{Tokens: []string{webhookToken}},
		Registry: prometheus.NewRegistry(), Logger: log,
		Blocks: &webhook.BlocksConfig{Lister: lister, Preflight: consumer.Guardrails{}.Preflight,
			Subject: b.Names().IncidentSubject + ".manual"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(h)
	tb.Cleanup(hs.Close)
	r.url = hs.URL

	cctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(r.done)
		for {
			reg := prometheus.NewRegistry()
			r.mu.Lock()
			r.regs = append(r.regs, reg)
			r.mu.Unlock()
			cons, err := consumer.New(cctx, consumer.Config{
				JS: b.JetStream(), Conn: b.Conn(), Names: b.Names(), Registry: reg, Logger: log,
				Actor: "replica-" + name, AckWait: ackWait,
			})
			if err == nil {
				err = cons.Run(cctx)
			}
			if cctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("Run returned nil")
			}
			r.mu.Lock()
			r.exits = append(r.exits, exit{at: time.Now(), err: err})
			r.mu.Unlock()
			log.Error().Err(err).Msg("consumer stopped; the supervisor starts it again in 1s")
			select {
			case <-cctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stops lists the consumer's unplanned exits so far.
func (r *replica) stops() []exit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.exits)
}

// applied is how many incidents this replica's consumer applied (its metric).
func (r *replica) applied() float64 {
	return r.sum("applied")
}

// retries is how many deliveries it NAKed for a retry.
func (r *replica) retries() float64 {
	return r.sum("retry")
}

// sum adds an outcome's count over every run of the consumer.
func (r *replica) sum(outcome string) float64 {
	r.mu.Lock()
	regs := slices.Clone(r.regs)
	r.mu.Unlock()
	var n float64
	for _, reg := range regs {
		n += counter(reg, "blockwire_consumer_incidents_total", "outcome", outcome)
	}
	return n
}

func counter(reg *prometheus.Registry, name, label, value string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// node is the server this replica is connected to now ("" while reconnecting).
func (r *replica) node() string {
	if !r.b.Conn().IsConnected() {
		return ""
	}
	return r.b.Conn().ConnectedServerName()
}

// poster sends incidents to webhooks as Noname would: a 503 (or no answer) is retried until a
// 202, which is the promise under test.
type poster struct {
	client *http.Client

	unavailable atomic.Int64 // 503 answers
	transport   atomic.Int64 // requests that got no answer

	mu      sync.Mutex
	slowest map[int]time.Duration // by status
}

func newPoster() *poster {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &poster{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// accepted is a 202: what the webhook promised.
type accepted struct {
	webhook.Accepted
	via      int       // replica index
	at       time.Time // when the 202 arrived
	sent     time.Time // when the request that got it was sent
	attempts int       // requests sent for this incident
}

// retryLimit is how long one incident may go unaccepted: a webhook unable to store anything for
// a minute is broken, not recovering.
const retryLimit = time.Minute

// post sends body to url until it is accepted, and says how many attempts it took and when
// the accepted one started.
func (p *poster) post(ctx context.Context, url string, body []byte) (webhook.Accepted, int, time.Time, error) {
	start := time.Now()
	var last string
	for attempt := 1; ; attempt++ {
		began := time.Now()
		acc, status, err := p.once(ctx, url, body)
		p.noteSlow(time.Since(began), status)
		switch {
		case err == nil && status == http.StatusAccepted:
			return acc, attempt, began, nil
		case err != nil:
			p.transport.Add(1)
			last = err.Error()
		case status == http.StatusServiceUnavailable:
			p.unavailable.Add(1)
			last = "503"
		default:
			return acc, attempt, began, fmt.Errorf("POST %s: status %d", url, status)
		}
		if ctx.Err() != nil {
			return acc, attempt, began, ctx.Err()
		}
		if time.Since(start) > retryLimit {
			return acc, attempt, began, fmt.Errorf("POST %s: not accepted for %s, last: %s", url, retryLimit, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// noteSlow keeps the slowest answer of each kind.
func (p *poster) noteSlow(d time.Duration, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slowest == nil {
		p.slowest = map[int]time.Duration{}
	}
	p.slowest[status] = max(p.slowest[status], d)
}

// slowestAnswers is the slowest answer per status (0: no answer).
func (p *poster) slowestAnswers() map[int]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.slowest)
}

func (p *poster) once(ctx context.Context, url string, body []byte) (webhook.Accepted, int, error) {
	var acc webhook.Accepted
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/incidents", bytes.NewReader(body))
	if err != nil {
		return acc, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	resp, err := p.client.Do(req)
	if err != nil {
		return acc, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return acc, 0, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(data, &acc); err != nil {
			return acc, 0, fmt.Errorf("202 body %q: %w", data, err)
		}
	}
	return acc, resp.StatusCode, nil
}

// burst posts incidents with workers concurrent senders, incident i to replica i%len(to).
type burst struct {
	incidents []schemas.Incident
	results   []accepted // by incident index; zero Seq when not accepted
	count     atomic.Int64
	err       error
	done      chan struct{}
}

func startBurst(ctx context.Context, p *poster, to []*replica, incidents []schemas.Incident, workers int) *burst {
	b := &burst{incidents: incidents, results: make([]accepted, len(incidents)), done: make(chan struct{})}
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	for range workers {
		wg.Go(func() {
			for i := range next {
				body, err := json.Marshal(incidents[i])
				if err == nil {
					var (
						acc      webhook.Accepted
						attempts int
						sent     time.Time
					)
					if acc, attempts, sent, err = p.post(ctx, to[i%len(to)].url, body); err == nil {
						b.results[i] = accepted{Accepted: acc, via: i % len(to), at: time.Now(), sent: sent, attempts: attempts}
						b.count.Add(1)
						continue
					}
				}
				once.Do(func() { b.err = fmt.Errorf("incident %s: %w", incidents[i].ID, err) })
			}
		})
	}
	go func() {
		defer close(b.done)
		for i := range incidents {
			select {
			case next <- i:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		close(next)
		wg.Wait()
	}()
	return b
}

// wait returns once every incident was sent; it is the burst's first error.
func (b *burst) wait() error {
	<-b.done
	return b.err
}
