package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is one target of the load: where to POST incidents and with which token.
type endpoint struct {
	name  string // "webhook" or "reference"
	url   string // full URL of the incidents endpoint
	token string // bearer token; none sent when empty
}

// newClient returns the one client shared by every worker and both targets.
// Keep-alive is on and up to c connections per host stay idle between
// requests, so a run uses c long-lived connections per target, not a new TCP
// connection per request. There is no proxy: the load must go over loopback.
func newClient(c int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        0, // no global limit; the per-host one applies
			MaxIdleConnsPerHost: c,
			MaxConnsPerHost:     c,
			IdleConnTimeout:     5 * time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
	}
}

func newRequest(ctx context.Context, ep endpoint, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if ep.token != "" {
		req.Header.Set("Authorization", "Bearer "+ep.token)
	}
	return req, nil
}

// checkReady fails unless GET base/readyz answers 200: measuring a serve that
// is not connected to NATS would only measure its error path.
func checkReady(ctx context.Context, client *http.Client, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimRight(base, "/") + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("bad -url %q: %w", base, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fmt.Errorf("serve is not reachable: GET %s: %w (is `blockwire serve` running and -url right?)", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("serve is not ready: GET %s answered %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// preflight sends one incident and fails unless it is accepted, so a wrong
// token or a refused body stops the run at once with the server's own words.
func preflight(ctx context.Context, client *http.Client, ep endpoint, body []byte) error {
	req, err := newRequest(ctx, ep, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: POST %s: %w", ep.name, ep.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode == http.StatusAccepted {
		return nil
	}
	hint := ""
	if resp.StatusCode == http.StatusUnauthorized {
		hint = " (check -token or BLOCKWIRE_WEBHOOK_TOKEN)"
	}
	return fmt.Errorf("%s: POST %s answered %s%s: %s", ep.name, ep.url, resp.Status, hint, strings.TrimSpace(string(b)))
}

var duplicateTrue = []byte(`"duplicate":true`)

// runLoad sends bodies to ep from c workers, each with one request in flight,
// and records every request's status and latency. It stops early, with the
// unsent requests marked as transport errors, when ctx is cancelled.
func runLoad(ctx context.Context, client *http.Client, ep endpoint, bodies [][]byte, c int) result {
	n := len(bodies)
	r := result{target: ep.name, status: make([]int, n), latency: make([]time.Duration, n)}
	var (
		next       atomic.Int64
		duplicates atomic.Int64
		firstErr   sync.Once
		wg         sync.WaitGroup
	)
	start := time.Now()
	for range c {
		wg.Go(func() {
			var buf bytes.Buffer
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				status, dup, err := do(ctx, client, ep, bodies[i], &buf, &r.latency[i])
				r.status[i] = status
				if dup {
					duplicates.Add(1)
				}
				if err != nil {
					firstErr.Do(func() { r.firstError = err.Error() })
				}
			}
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.duplicates = int(duplicates.Load())
	if err := ctx.Err(); err != nil {
		firstErr.Do(func() { r.firstError = err.Error() })
	}
	return r
}

// do sends one request and reads its whole answer (so the connection is
// reused); *lat is the time from sending to the end of the answer.
func do(ctx context.Context, client *http.Client, ep endpoint, body []byte, buf *bytes.Buffer, lat *time.Duration) (status int, duplicate bool, err error) {
	req, err := newRequest(ctx, ep, body)
	if err != nil {
		return 0, false, err
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		*lat = time.Since(t0)
		return 0, false, err
	}
	buf.Reset()
	_, rerr := buf.ReadFrom(resp.Body)
	resp.Body.Close()
	*lat = time.Since(t0)
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return 0, false, fmt.Errorf("read answer: %w", rerr)
	}
	return resp.StatusCode, resp.StatusCode == http.StatusAccepted && bytes.Contains(buf.Bytes(), duplicateTrue), nil
}
