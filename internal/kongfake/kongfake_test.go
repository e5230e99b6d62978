package kongfake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/kong/go-kong/kong"

	"github.com/blockwire/blockwire/internal/kongfake"
)

// recordingTB keeps what the fake reports instead of failing the test, so that tests can check
// that a request the description does not allow is caught.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.errs
	r.errs = nil
	return out
}

func newClient(t *testing.T, url string, headers http.Header) *kong.Client {
	t.Helper()
	hc := kong.HTTPClientWithHeaders(&http.Client{Timeout: 5 * time.Second}, headers)
	c, err := kong.NewClient(kong.String(url), hc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// do sends a raw request and returns the status and decoded body.
func do(t *testing.T, method, url, contentType string, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		_ = json.Unmarshal(data, &out)
	}
	return resp.StatusCode, out
}

func TestDescriptionViolationsFailTheTest(t *testing.T) {
	rec := &recordingTB{TB: t}
	f := kongfake.New(rec, kongfake.Options{})
	svc := f.AddService("orders")
	pid := uuid.NewString()

	tests := []struct {
		name, method, path, ctype, body string
		violation                       bool
		status                          int
	}{
		{"a path Kong does not serve", "GET", "/plugins/x/y/z", "", "", true, 400},
		{"a method the path does not have", "PATCH", "/plugins", "application/json", `{}`, true, 400},
		{"size above 1000", "GET", "/plugins?size=1001", "", "", true, 400},
		{"size not a number", "GET", "/plugins?size=ten", "", "", true, 400},
		{"an undeclared query parameter", "GET", "/plugins?name=ip-restriction", "", "", true, 400},
		{"a form body", "POST", "/plugins", "application/x-www-form-urlencoded", "name=ip-restriction&config.deny=1.2.3.4", true, 400},
		{"a body on DELETE", "DELETE", "/plugins/" + pid, "application/json", `{}`, true, 400},
		{"a body that is not an object", "PUT", "/plugins/" + pid, "application/json", `[1]`, true, 400},
		{"a reference with both id and name", "POST", "/plugins", "application/json",
			`{"name":"ip-restriction","service":{"id":"` + svc + `","name":"orders"},"config":{"deny":["1.2.3.4"]}}`, true, 400},
		{"a reference as a bare string (Kong wants a record)", "POST", "/plugins", "application/json",
			`{"name":"ip-restriction","service":"` + svc + `","config":{"deny":["1.2.3.4"]}}`, true, 400},
		{"a reference by name", "POST", "/plugins", "application/json",
			`{"name":"ip-restriction","service":{"name":"orders"},"config":{"deny":["1.2.3.4"]}}`, false, 201},
		{"list plugins", "GET", "/plugins?size=1000&tags=a,b", "", "", false, 200},
		{"the service plugins path the description misspells", "GET", "/services/" + svc + "/plugins", "", "", false, 200},
		{"the service plugins path, by name", "GET", "/services/orders/plugins?size=10", "", "", false, 200},
		{"delete an absent plugin", "DELETE", "/plugins/" + pid, "", "", false, 204},
		{"node information", "GET", "/", "", "", false, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _ := do(t, tc.method, f.URL()+tc.path, tc.ctype, tc.body)
			errs := rec.take()
			if got := len(errs) > 0; got != tc.violation {
				t.Fatalf("violation reported = %v (%q), want %v", got, errs, tc.violation)
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
		})
	}
}

func TestKongRulesOnPlugins(t *testing.T) {
	f := kongfake.New(t, kongfake.Options{AllowSchemaViolations: true})
	f.AddService("orders")
	tests := []struct {
		name   string
		body   string
		status int
		want   string // in the message
	}{
		{"name required", `{"config":{"deny":["1.2.3.4"]}}`, 400, "name: required field missing"},
		{"unknown top-level field", `{"name":"ip-restriction","nme":1,"config":{"deny":["1.2.3.4"]}}`, 400, "nme: unknown field"},
		{"plugin not enabled", `{"name":"bot-detection"}`, 400, "not enabled"},
		{"ip-restriction without allow or deny", `{"name":"ip-restriction"}`, 400, "at least one of these fields must be non-empty"},
		{"ip-restriction with empty deny", `{"name":"ip-restriction","config":{"deny":[]}}`, 400, "at least one of these fields must be non-empty"},
		{"bad address", `{"name":"ip-restriction","config":{"deny":["1.2.3.999"]}}`, 400, "invalid ip or cidr range"},
		{"unknown config field", `{"name":"ip-restriction","config":{"deny":["1.2.3.4"],"denyy":["1.2.3.5"]}}`, 400, "config.denyy: unknown field"},
		{"unknown service", `{"name":"ip-restriction","service":{"id":"` + uuid.NewString() + `"},"config":{"deny":["1.2.3.4"]}}`, 400, "does not reference an existing 'services' entity"},
		{"bad instance name", `{"name":"ip-restriction","instance_name":"a b","config":{"deny":["1.2.3.4"]}}`, 400, "instance_name"},
		{"message with body", `{"name":"request-termination","config":{"message":"x","body":"y"}}`, 400, "message cannot be used"},
		{"status code out of range", `{"name":"request-termination","config":{"status_code":700}}`, 400, "between 100 and 599"},
		{"bad tag", `{"name":"ip-restriction","tags":["a,b"],"config":{"deny":["1.2.3.4"]}}`, 400, "invalid tag"},
		{"valid global", `{"name":"ip-restriction","instance_name":"deny-all","config":{"deny":["1.2.3.4","10.0.0.0/8","2001:db8::/32"]}}`, 201, ""},
		{"second instance at the same scope", `{"name":"ip-restriction","config":{"allow":["10.0.0.0/8"]}}`, 409, "UNIQUE violation"},
		{"same instance name elsewhere", `{"name":"ip-restriction","instance_name":"deny-all","service":{"name":"orders"},"config":{"deny":["1.2.3.4"]}}`, 409, "instance_name"},
		{"same name at another scope", `{"name":"ip-restriction","service":{"name":"orders"},"config":{"deny":["1.2.3.4"]}}`, 201, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, "POST", f.URL()+"/plugins", "application/json", tc.body)
			if status != tc.status {
				t.Fatalf("status %d (%v), want %d", status, body, tc.status)
			}
			if msg, _ := body["message"].(string); !strings.Contains(msg, tc.want) {
				t.Fatalf("message %q, want it to contain %q", msg, tc.want)
			}
		})
	}
}

func TestSchemaViolationFailsTheTestByDefault(t *testing.T) {
	rec := &recordingTB{TB: t}
	f := kongfake.New(rec, kongfake.Options{})
	if status, _ := do(t, "POST", f.URL()+"/plugins", "application/json", `{"name":"ip-restriction"}`); status != 400 {
		t.Fatalf("status %d, want 400", status)
	}
	if errs := rec.take(); len(errs) != 1 || !strings.Contains(errs[0], "at least one") {
		t.Fatalf("reported %q, want the schema violation", errs)
	}
	// A conflict is Kong's behaviour, not a client bug: not reported.
	do(t, "POST", f.URL()+"/plugins", "application/json", `{"name":"ip-restriction","config":{"deny":["1.2.3.4"]}}`)
	do(t, "POST", f.URL()+"/plugins", "application/json", `{"name":"ip-restriction","config":{"deny":["1.2.3.5"]}}`)
	if errs := rec.take(); len(errs) != 0 {
		t.Fatalf("reported %q for a conflict", errs)
	}
}

func TestUpsertPatchDelete(t *testing.T) {
	ctx := context.Background()
	f := kongfake.New(t, kongfake.Options{AllowSchemaViolations: true})
	c := newClient(t, f.URL(), nil)
	id := uuid.NewString()
	p := &kong.Plugin{ID: kong.String(id), Name: kong.String("ip-restriction"), Tags: kong.StringSlice("mine"),
		Config: kong.Configuration{"deny": []string{"1.2.3.4", "1.2.3.5"}, "status": 403}}
	for range 2 { // PUT is idempotent
		got, err := c.Plugins.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if *got.ID != id || got.Config["message"] != nil || *got.Enabled != true {
			t.Fatalf("upserted %+v", got)
		}
	}
	if n := len(f.Plugins()); n != 1 {
		t.Fatalf("%d plugins after two PUTs, want 1", n)
	}
	// PATCH replaces arrays whole and keeps the other config fields.
	if _, err := c.Plugins.Update(ctx, &kong.Plugin{ID: kong.String(id), Config: kong.Configuration{"deny": []string{"9.9.9.9"}}}); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Plugin(id)
	if d := got.ConfigStrings("deny"); len(d) != 1 || d[0] != "9.9.9.9" || got.Config["status"] != float64(403) {
		t.Fatalf("after PATCH: %v", got.Config)
	}
	// PATCH cannot empty the deny list of an ip-restriction without allow.
	_, err := c.Plugins.Update(ctx, &kong.Plugin{ID: kong.String(id), Config: kong.Configuration{"deny": nil}})
	var apiErr *kong.APIError
	if !errors.As(err, &apiErr) || apiErr.Code() != 400 {
		t.Fatalf("PATCH emptying the only list: %v, want 400", err)
	}
	for range 2 { // DELETE answers 204 whether or not the plugin exists
		if err := c.Plugins.Delete(ctx, kong.String(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Plugins.Get(ctx, kong.String(id)); !kong.IsNotFoundErr(err) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestNestedPathsAndUnknownParents(t *testing.T) {
	ctx := context.Background()
	f := kongfake.New(t, kongfake.Options{})
	c := newClient(t, f.URL(), nil)
	svc := f.AddService("orders")
	rt := f.AddRoute("list-orders", svc)
	f.AddConsumer("acme")

	p, err := c.Plugins.CreateForService(ctx, kong.String("orders"), &kong.Plugin{Name: kong.String("ip-restriction"),
		Config: kong.Configuration{"deny": []string{"1.2.3.4"}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Service == nil || *p.Service.ID != svc {
		t.Fatalf("service plugin scoped to %+v", p.Service)
	}
	if _, err := c.Plugins.CreateForRoute(ctx, kong.String(rt), &kong.Plugin{Name: kong.String("ip-restriction"),
		Config: kong.Configuration{"allow": []string{"10.0.0.0/8"}}}); err != nil {
		t.Fatal(err)
	}
	list, err := c.Plugins.ListAllForService(ctx, kong.String(svc))
	if err != nil || len(list) != 1 {
		t.Fatalf("service plugins: %d, %v", len(list), err)
	}
	list, err = c.Plugins.ListAllForConsumer(ctx, kong.String("acme"))
	if err != nil || len(list) != 0 {
		t.Fatalf("consumer plugins: %d, %v", len(list), err)
	}
	for _, path := range []string{"/services/nope/plugins", "/routes/nope/plugins", "/consumers/nope/plugins", "/services/nope"} {
		if status, _ := do(t, "GET", f.URL()+path, "", ""); status != 404 {
			t.Fatalf("GET %s: %d, want 404", path, status)
		}
	}
	if _, err := c.Plugins.ListAllForRoute(ctx, kong.String(uuid.NewString())); !kong.IsNotFoundErr(err) {
		t.Fatalf("unknown route: %v", err)
	}
	// Deleting the route takes its plugins with it.
	if err := c.Routes.Delete(ctx, kong.String(rt)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Plugins()); n != 1 {
		t.Fatalf("%d plugins after deleting the route, want 1", n)
	}
}

func TestPagingAndTags(t *testing.T) {
	ctx := context.Background()
	f := kongfake.New(t, kongfake.Options{})
	c := newClient(t, f.URL(), nil)
	const n = 2500
	for i := range n {
		cid := f.AddConsumer(fmt.Sprintf("c%d", i))
		tags := []string{"all"}
		if i%2 == 0 {
			tags = append(tags, "even")
		}
		if i%3 == 0 {
			tags = append(tags, "third")
		}
		if _, err := f.AddPlugin(map[string]any{"name": "request-termination", "consumer": map[string]any{"id": cid},
			"tags": tags, "config": map[string]any{"status_code": 403}}); err != nil {
			t.Fatal(err)
		}
	}
	f.ResetRequests()
	all, err := c.Plugins.ListAll(ctx) // go-kong pages by 1000
	if err != nil || len(all) != n {
		t.Fatalf("listed %d, %v; want %d", len(all), err, n)
	}
	seen := map[string]bool{}
	for _, p := range all {
		seen[*p.ID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct plugins over the pages, want %d", len(seen), n)
	}
	if got := len(f.Requests()); got != 3 {
		t.Fatalf("%d requests to list %d plugins by 1000, want 3", got, n)
	}
	for _, tc := range []struct {
		tags  []string
		all   bool
		count int
	}{
		{[]string{"even", "third"}, true, 417}, // multiples of 6 below 2500
		{[]string{"even", "third"}, false, 1667},
		{[]string{"all"}, true, n},
		{[]string{"none"}, true, 0},
	} {
		opt := &kong.ListOpt{Size: 1000, Tags: kong.StringSlice(tc.tags...), MatchAllTags: tc.all}
		got := 0
		for opt != nil {
			var page []*kong.Plugin
			page, opt, err = c.Plugins.List(ctx, opt)
			if err != nil {
				t.Fatal(err)
			}
			got += len(page)
		}
		if got != tc.count {
			t.Fatalf("tags %v (all=%v): %d, want %d", tc.tags, tc.all, got, tc.count)
		}
	}
	// The default page is 100.
	status, body := do(t, "GET", f.URL()+"/plugins", "", "")
	if data, _ := body["data"].([]any); status != 200 || len(data) != 100 || body["offset"] == nil {
		t.Fatalf("default page: %d, %d items, offset %v", status, len(data), body["offset"])
	}
	if status, _ := do(t, "GET", f.URL()+"/plugins?offset=garbage", "", ""); status != 400 {
		t.Fatalf("bad offset: %d, want 400", status)
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	f := kongfake.New(t, kongfake.Options{})
	c := newClient(t, f.URL(), nil)
	put := func() error {
		_, err := c.Plugins.Create(ctx, &kong.Plugin{ID: kong.String("7fca84d6-7d37-4a74-a7b0-93e576089a41"),
			Name: kong.String("ip-restriction"), Config: kong.Configuration{"deny": []string{"1.2.3.4"}}})
		return err
	}

	f.Inject(kongfake.Fault{WritesOnly: true, Status: 429, RetryAfter: "3", Times: 1})
	err := put()
	var apiErr *kong.APIError
	if !errors.As(err, &apiErr) || apiErr.Code() != 429 {
		t.Fatalf("want 429, got %v", err)
	}
	if d, ok := apiErr.Details().(kong.ErrTooManyRequestsDetails); !ok || d.RetryAfter != 3*time.Second {
		t.Fatalf("Retry-After: %+v", apiErr.Details())
	}
	if err := put(); err != nil {
		t.Fatalf("after the fault is spent: %v", err)
	}

	remove := f.Inject(kongfake.Fault{Path: "/plugins", Drop: true})
	if _, err := c.Plugins.ListAll(ctx); err == nil {
		t.Fatal("dropped connection: no error")
	}
	remove()

	f.Inject(kongfake.Fault{Method: "GET", Delay: time.Second, Times: 1})
	slow := newClient(t, f.URL(), nil)
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = slow.Plugins.ListAll(tctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delay past the client's deadline: %v", err)
	}

	f.SetDBLess(true)
	if err := put(); !errors.As(err, &apiErr) || apiErr.Code() != 405 {
		t.Fatalf("DB-less write: %v", err)
	}
	root, err := c.Root(ctx)
	if err != nil || root["configuration"].(map[string]any)["database"] != "off" {
		t.Fatalf("DB-less root: %v, %v", root["configuration"], err)
	}
	if _, err := c.Plugins.ListAll(ctx); err != nil {
		t.Fatalf("DB-less read: %v", err)
	}
}

func TestRequiredHeaders(t *testing.T) {
	ctx := context.Background()
	f := kongfake.New(t, kongfake.Options{RequireHeaders: http.Header{"Kong-Admin-Token": {"s3cret"}}})
	var apiErr *kong.APIError
	if _, err := newClient(t, f.URL(), nil).Plugins.ListAll(ctx); !errors.As(err, &apiErr) || apiErr.Code() != 401 {
		t.Fatalf("without the token: %v", err)
	}
	if _, err := newClient(t, f.URL(), http.Header{"Kong-Admin-Token": {"s3cret"}}).Plugins.ListAll(ctx); err != nil {
		t.Fatalf("with the token: %v", err)
	}
}

func TestRequestsAreRecorded(t *testing.T) {
	f := kongfake.New(t, kongfake.Options{})
	do(t, "GET", f.URL()+"/plugins?size=5", "", "")
	do(t, "DELETE", f.URL()+"/plugins/"+uuid.NewString(), "", "")
	reqs := f.Requests()
	if len(reqs) != 2 || reqs[0].RawQuery != "size=5" || reqs[1].Status != 204 || !reqs[1].Write() || f.Writes() != 1 {
		t.Fatalf("recorded %+v", reqs)
	}
}
