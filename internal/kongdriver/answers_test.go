package kongdriver

import (
	"encoding/json"
	"fmt"
	"testing"
)

// echo runs echoplugin, which returns what go-pdk decoded from the driver's answers.
func echo(t *testing.T, d *Driver, req Request) (map[string]any, *Result) {
	t.Helper()
	res, err := startInstance(t, d, nil).Access(testContext(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 {
		t.Fatalf("Result = %+v, want the echo exit", res)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Body, &out); err != nil {
		t.Fatalf("echo body %q: %v", res.Body, err)
	}
	return out, res
}

func TestAnswersThroughGoPDK(t *testing.T) {
	d := startDriver(t, "echoplugin")
	out, res := echo(t, d, Request{
		ClientIP: "192.0.2.1", ForwardedIP: "198.51.100.7", Method: "POST", Path: "/v1/x",
		RawQuery: "q=a+b&q=2&flag",
		Headers: map[string][]string{
			"X-Api-Key": {"secret"}, "x-multi": {"1", "2"},
		},
		Service:    &Service{ID: "s1", Name: "svc"},
		Route:      &Route{ID: "r1", Name: "rt"},
		Consumer:   &Consumer{ID: "c1", Username: "alice", CustomID: "A"},
		Credential: &Credential{ID: "k1", ConsumerID: "c1"},
	})
	want := map[string]any{
		"ip": "192.0.2.1", "forwarded_ip": "198.51.100.7", "header": "secret",
		"missing_header": "", "headers_len": 2.0, "raw_query": "q=a+b&q=2&flag", "query_q": "a b",
		"path": "/v1/x", "method": "POST", "service": "s1/svc", "route": "r1/rt/s1",
		"consumer": "c1/alice/A", "credential": "k1/c1", "ctx_get": "v", "ctx_absent": nil,
		"var_remote_addr": "192.0.2.1",
	}
	for k, v := range want {
		if fmt.Sprint(out[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, out[k], v)
		}
	}
	if fmt.Sprint(out["headers_multi"]) != "[1 2]" {
		t.Errorf("headers_multi = %v", out["headers_multi"])
	}
	for k, v := range out {
		if len(k) > 4 && k[len(k)-4:] == "_err" {
			t.Errorf("%s = %v", k, v) // go-pdk saw an error where Kong gives none
		}
	}
	if len(res.Logs) != 1 || res.Logs[0] != "info: hello 42" {
		t.Errorf("Logs = %q", res.Logs)
	}
}

// Kong searches only the first 100 header lines, so a client can hide a header behind 100
// others; the driver orders lines by name, so names sorting first do the pushing.
func TestHeaderLimit(t *testing.T) {
	d := startDriver(t, "echoplugin")
	h := map[string][]string{"x-api-key": {"secret"}}
	for i := range 100 {
		h[fmt.Sprintf("a-%03d", i)] = []string{"x"}
	}
	out, _ := echo(t, d, Request{Headers: h})
	if out["header"] != "" || out["headers_len"] != 100.0 {
		t.Errorf("header = %q, headers_len = %v; want the key hidden and 100 headers", out["header"], out["headers_len"])
	}
}
