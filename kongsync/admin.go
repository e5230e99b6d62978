package kongsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/blockwire/blockwire/internal/wait"
	"github.com/kong/go-kong/kong"
	"github.com/rs/zerolog"
)

// The parts of go-kong the sync uses, declared here so tests and readers see the whole surface.
type (
	kongPlugins interface {
		Delete(ctx context.Context, pluginID *string) error
		List(ctx context.Context, opt *kong.ListOpt) ([]*kong.Plugin, *kong.ListOpt, error)
	}
	kongInfo interface {
		Root(ctx context.Context) (map[string]any, error)
	}
	// kongRequests sends a request the sync built itself: the PUT of a plugin, whose body (up to
	// megabytes) is encoded once, measured, and not decoded back from Kong's echo; and the
	// lookups of services, routes and consumers by a name from a block, escaped by the sync
	// (go-kong's Get methods splice a name into the path as it is).
	kongRequests interface {
		NewRequest(method, endpoint string, qs, body any) (*http.Request, error)
		Do(ctx context.Context, req *http.Request, v any) (*kong.Response, error)
	}
)

var (
	_ kongPlugins  = (*kong.PluginService)(nil)
	_ kongInfo     = (*kong.Client)(nil)
	_ kongRequests = (*kong.Client)(nil)
)

// Errors callers can test with errors.Is.
var (
	// ErrUnauthorized: Kong answered 401 or 403; the credentials (--kong-admin-header) are wrong
	// or lack the rights to manage plugins.
	ErrUnauthorized = errors.New("kong admin api refused the credentials")
	// ErrDBLess: Kong runs without a database and refuses writes (405); there the
	// noname-prevention plugin is the enforcement path.
	ErrDBLess = errors.New("kong runs DB-less")
	// ErrUnavailable: Kong did not answer usefully (5xx, 429, timeouts) after every retry.
	ErrUnavailable = errors.New("kong admin api unavailable")
	// ErrConflict: Kong answered 409 (unique violation).
	ErrConflict = errors.New("kong admin api conflict")
	// ErrNotFound: Kong answered 404.
	ErrNotFound = errors.New("not found in kong")
	// ErrRejected: Kong refused the request (another 4xx).
	ErrRejected = errors.New("kong admin api refused the request")
)

// errLocalRequest: the sync could not build a request (a name no path segment can carry, a URL
// that does not parse). Nothing reached Kong, and asking again would fail the same way: it is
// never retried, and a lookup that fails so is an unresolved scope, not an outage.
var errLocalRequest = errors.New("cannot build the kong admin api request")

// pathSegment escapes a name or id from a block (any string) as one path segment, which Kong
// decodes back: "alice#x" must not ask for consumer alice, "../services/x" for a service.
// url.PathEscape escapes '/', '?', '#' and '%'; '+' is escaped too, for decoders that read it as
// a space. The dot segments "." and ".." cannot be sent at all: HTTP servers and proxies resolve
// them (percent-encoded too, as RFC 3986 makes "%2E" the same as "."), so GET /consumers/..
// would not ask for a consumer named "..".
func pathSegment(name string) (string, error) {
	switch name {
	case "", ".", "..":
		return "", fmt.Errorf("%w: %q is no path segment", errLocalRequest, name)
	}
	return strings.ReplaceAll(url.PathEscape(name), "+", "%2B"), nil
}

// RetryPolicy is how the sync retries a failing Admin API call.
type RetryPolicy struct {
	// Attempts is the most tries of one call, the first included. Default 5.
	Attempts int
	// Base is the first backoff; each retry doubles it, with full jitter. Default 250ms.
	Base time.Duration
	// Max caps a backoff. Default 10s.
	Max time.Duration
	// MaxRetryAfter caps a wait Kong asks for with Retry-After (429). Default 60s.
	MaxRetryAfter time.Duration
}

func (p *RetryPolicy) defaults() {
	if p.Attempts == 0 {
		p.Attempts = 5
	}
	if p.Base == 0 {
		p.Base = 250 * time.Millisecond
	}
	if p.Max == 0 {
		p.Max = 10 * time.Second
	}
	if p.MaxRetryAfter == 0 {
		p.MaxRetryAfter = time.Minute
	}
}

// backoff is the wait before retry n (1 for the first): full jitter over base·2^(n-1), capped,
// so that replicas and retries spread out.
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.Base << min(max(n, 1)-1, 20)
	if d <= 0 || d > p.Max {
		d = p.Max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// Write outcomes, the label of the writes metric.
const (
	outcomeOK           = "ok"
	outcomeRetry        = "retry"        // 5xx, 429, timeout or connection error; retried
	outcomeConflict     = "conflict"     // 409
	outcomeUnauthorized = "unauthorized" // 401, 403
	outcomeDBLess       = "dbless"       // 405
	outcomeRejected     = "rejected"     // another 4xx
	outcomeError        = "error"        // gave up, or cancelled
)

// classify maps an Admin API error to the sentinel it stands for (nil for success), whether it is
// worth retrying, and the wait Kong asked for.
func classify(ctx context.Context, err error) (sentinel error, retry bool, retryAfter time.Duration) {
	if err == nil {
		return nil, false, 0
	}
	if ctx.Err() != nil {
		return ctx.Err(), false, 0
	}
	if errors.Is(err, errLocalRequest) {
		return errLocalRequest, false, 0
	}
	var apiErr *kong.APIError
	if !errors.As(err, &apiErr) {
		return ErrUnavailable, true, 0 // connection refused or dropped, timeout, bad body
	}
	switch code := apiErr.Code(); {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ErrUnauthorized, false, 0
	case code == http.StatusMethodNotAllowed:
		return ErrDBLess, false, 0
	case code == http.StatusConflict:
		return ErrConflict, false, 0
	case code == http.StatusNotFound:
		return ErrNotFound, false, 0
	case code == http.StatusTooManyRequests:
		if d, ok := apiErr.Details().(kong.ErrTooManyRequestsDetails); ok {
			retryAfter = d.RetryAfter
		}
		return ErrUnavailable, true, retryAfter
	case code >= 500:
		return ErrUnavailable, true, 0
	}
	return ErrRejected, false, 0
}

func outcomeOf(sentinel error, retry bool) string {
	switch {
	case sentinel == nil:
		return outcomeOK
	case retry:
		return outcomeRetry
	case errors.Is(sentinel, ErrUnauthorized):
		return outcomeUnauthorized
	case errors.Is(sentinel, ErrDBLess):
		return outcomeDBLess
	case errors.Is(sentinel, ErrConflict):
		return outcomeConflict
	case errors.Is(sentinel, ErrRejected), errors.Is(sentinel, ErrNotFound):
		return outcomeRejected
	}
	return outcomeError
}

// admin wraps go-kong with retries, classification and counting.
type admin struct {
	plugins  kongPlugins
	info     kongInfo
	requests kongRequests
	retry    RetryPolicy
	m        *metrics
	log      zerolog.Logger
}

// call runs fn, retrying what is worth retrying. The error wraps the sentinel and Kong's own.
func (a *admin) call(ctx context.Context, what string, write bool, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		sentinel, retry, retryAfter := classify(ctx, err)
		if write {
			a.m.writes.WithLabelValues(outcomeOf(sentinel, retry)).Inc()
		}
		if sentinel == nil {
			return nil
		}
		if !retry {
			if errors.Is(err, sentinel) { // errLocalRequest carries it already
				return fmt.Errorf("%s: %w", what, err)
			}
			return fmt.Errorf("%s: %w: %w", what, sentinel, err)
		}
		if attempt >= a.retry.Attempts {
			return fmt.Errorf("%s: %w after %d attempts: %w", what, sentinel, attempt, err)
		}
		pause := a.retry.backoff(attempt)
		if retryAfter > 0 {
			pause = min(retryAfter, a.retry.MaxRetryAfter)
		}
		a.log.Debug().Err(err).Str("call", what).Int("attempt", attempt).Dur("wait", pause).Msg("kong admin api call failed, retrying")
		if err := wait.Sleep(ctx, pause); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
}

// listPlugins reads every plugin, 1,000 (Kong's most) per page.
func (a *admin) listPlugins(ctx context.Context) ([]*kong.Plugin, error) {
	var all []*kong.Plugin
	opt := &kong.ListOpt{Size: 1000}
	for opt != nil {
		var page []*kong.Plugin
		var next *kong.ListOpt
		err := a.call(ctx, "list plugins", false, func(ctx context.Context) error {
			var err error
			page, next, err = a.plugins.List(ctx, opt)
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		opt = next
	}
	return all, nil
}

// get reads one entity by name or id (GET /{collection}/{nameOrID}) into v. A name that cannot
// be sent, or a request that cannot be built, fails with errLocalRequest without asking Kong.
func (a *admin) get(ctx context.Context, what, collection, nameOrID string, v any) error {
	seg, err := pathSegment(nameOrID)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return a.call(ctx, what, false, func(ctx context.Context) error {
		req, err := a.requests.NewRequest(http.MethodGet, "/"+collection+"/"+seg, nil, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", errLocalRequest, err)
		}
		_, err = a.requests.Do(ctx, req, v)
		return err
	})
}

// putPlugin upserts p (PUT /plugins/{id}).
func (a *admin) putPlugin(ctx context.Context, p *kong.Plugin) error {
	body, err := json.Marshal(p) // what go-kong's Plugins.Create would send
	if err != nil {
		return fmt.Errorf("encode plugin %s: %w", *p.ID, err)
	}
	a.m.body.Observe(float64(len(body)))
	seg, err := pathSegment(*p.ID)
	if err != nil {
		return fmt.Errorf("put plugin %s: %w", *p.ID, err)
	}
	return a.call(ctx, "put plugin "+*p.ID, true, func(ctx context.Context) error {
		req, err := a.requests.NewRequest(http.MethodPut, "/plugins/"+seg, nil, body)
		if err != nil {
			return fmt.Errorf("%w: %w", errLocalRequest, err)
		}
		// Kong answers with the plugin it stored, as large as the body: drained for the
		// connection's reuse, never decoded (the sync reads Kong back when it reconciles).
		_, err = a.requests.Do(ctx, req, io.Discard)
		return err
	})
}

// deletePlugin deletes one plugin; Kong answers 204 even when it is gone already.
func (a *admin) deletePlugin(ctx context.Context, id string) error {
	seg, err := pathSegment(id)
	if err != nil {
		return fmt.Errorf("delete plugin %s: %w", id, err)
	}
	return a.call(ctx, "delete plugin "+id, true, func(ctx context.Context) error {
		return a.plugins.Delete(ctx, kong.String(seg)) // go-kong puts it in the path as it is
	})
}

// database reads Kong's database mode from GET / ("off" for DB-less).
func (a *admin) database(ctx context.Context) (string, error) {
	var root map[string]any
	err := a.call(ctx, "read kong node information", false, func(ctx context.Context) error {
		var err error
		root, err = a.info.Root(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	cfg, _ := root["configuration"].(map[string]any)
	db, _ := cfg["database"].(string)
	return db, nil
}
