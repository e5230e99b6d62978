package enforcer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/Kong/go-pdk/test"
)

func TestFailModeBeforeSync(t *testing.T) {
	tests := []struct {
		config     string
		wantStatus int // 0: let through
	}{
		{`{}`, 0}, // default: open
		{`{"fail_mode":"open"}`, 0},
		{`{"fail_mode":"closed"}`, 503},
		{`{"fail_mode":"CLOSED"}`, 503},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			rt, _ := testRuntime(t, nil)
			req := &fakeRequest{ip: "203.0.113.7", requestID: "rid-1"}
			testConfig(t, rt, tt.config).access(req)
			if req.status != tt.wantStatus {
				t.Fatalf("status %d, want %d", req.status, tt.wantStatus)
			}
			if tt.wantStatus == 0 {
				if len(req.calls) != 0 {
					t.Errorf("calls %v: a request before sync should cost none", req.calls)
				}
				return
			}
			var body map[string]string
			if err := json.Unmarshal(req.body, &body); err != nil || body["reason"] != reasonNotSynced || body["request_id"] != "rid-1" {
				t.Errorf("body %s (%v)", req.body, err)
			}
			if req.hdrs["Retry-After"] == nil {
				t.Errorf("headers %v: want Retry-After", req.hdrs)
			}
		})
	}
}

func TestInvalidConfigRefusesInstance(t *testing.T) {
	tests := []struct {
		config     string
		wantStatus int
		wantErr    string
	}{
		// Answered per the fail mode (open by default), closed when the fail mode is unreadable.
		{`{"status_code":99}`, 0, "config.status_code 99"},
		{`{"status_code":99,"fail_mode":"closed"}`, 500, "config.status_code 99"},
		{`{"fail_mode":"maybe"}`, 500, `config.fail_mode "maybe"`},
		{`{"bucket":"no.dots","fail_mode":"closed"}`, 500, "config.bucket"},
		{`{"nats_url":"http://x:4222","fail_mode":"closed"}`, 500, `scheme "http"`},
		{`{"nats_credentials":"/does/not/exist.creds","fail_mode":"closed"}`, 500, "config.nats_credentials"},
		{`{"status_code":"403","fail_mode":"closed"}`, 500, "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			w := newTestWriter(t, blk{kind: "ip", value: "203.0.113.7"})
			rt, _ := testRuntime(t, w.idx)
			c := testConfig(t, rt, tt.config)
			if c.inst.err == nil || !strings.Contains(c.inst.err.Error(), tt.wantErr) {
				t.Fatalf("instance error %v, want one containing %q", c.inst.err, tt.wantErr)
			}
			for range 2 { // the instance keeps answering; the process lives on
				req := &fakeRequest{ip: "203.0.113.7"}
				c.access(req)
				if req.status != tt.wantStatus {
					t.Fatalf("status %d, want %d", req.status, tt.wantStatus)
				}
			}
			if got := counterValue(rt.m.refused); got != 2 {
				t.Errorf("refused_instance = %v, want 2", got)
			}
		})
	}
}

func TestPanicIsRecovered(t *testing.T) {
	for _, tt := range []struct {
		config     string
		wantStatus int
	}{{`{}`, 0}, {`{"fail_mode":"closed"}`, 500}} {
		t.Run(tt.config, func(t *testing.T) {
			w := newTestWriter(t, blk{kind: "ip", value: "203.0.113.7"})
			rt, _ := testRuntime(t, w.idx)
			req := &fakeRequest{ip: "203.0.113.7", panicOn: callIP}
			testConfig(t, rt, tt.config).access(req)
			if req.status != tt.wantStatus {
				t.Fatalf("status %d, want %d", req.status, tt.wantStatus)
			}
			if got := counterValue(rt.m.panics); got != 1 {
				t.Errorf("panics = %v", got)
			}
		})
	}
}

func TestPDKErrorAnswersNothing(t *testing.T) {
	w := newTestWriter(t, blk{kind: "ip", value: "203.0.113.7"})
	rt, _ := testRuntime(t, w.idx)
	req := &fakeRequest{ip: "203.0.113.7", failOn: callIP}
	testConfig(t, rt, `{"fail_mode":"closed"}`).access(req)
	if req.exited || counterValue(rt.m.pdkErrors) != 1 {
		t.Fatalf("exited %v, pdk errors %v: a broken connection has nobody to answer", req.exited, counterValue(rt.m.pdkErrors))
	}
}

func TestResponse(t *testing.T) {
	tests := []struct {
		config, wantBody, wantType string
		wantStatus                 int
		wantCalls                  int
	}{
		{`{"status_code":451}`, `{"message":"Unavailable For Legal Reasons","reason":"blocked","request_id":"r\"1"}`, "application/json; charset=utf-8", 451, 3},
		{`{"response_body":"{\"error\":\"nope\",\"id\":\"{request_id}\"}"}`, `{"error":"nope","id":"r\"1"}`, "application/json; charset=utf-8", 403, 3},
		{`{"response_body":"go away"}`, `go away`, "text/plain; charset=utf-8", 403, 2},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			req := access(t, tt.config, &fakeRequest{ip: "203.0.113.7", requestID: `r"1`}, blk{kind: "ip", value: "203.0.113.7"})
			if req.status != tt.wantStatus || string(req.body) != tt.wantBody || req.hdrs["Content-Type"][0] != tt.wantType {
				t.Errorf("exit %d %s %v, want %d %s %s", req.status, req.body, req.hdrs, tt.wantStatus, tt.wantBody, tt.wantType)
			}
			if len(req.calls) != tt.wantCalls {
				t.Errorf("calls %v, want %d (get_var only when the body needs the id)", req.calls, tt.wantCalls)
			}
		})
	}
}

func TestConfigFallbacks(t *testing.T) {
	env := envDefaults{natsURL: "nats://nats.internal:4222", bucket: "other_blocks", status: "429", failMode: "closed", body: "slow down"}
	tests := []struct {
		name string
		c    Config
		env  envDefaults
		want settings
	}{
		{"defaults", Config{}, envDefaults{}, settings{loc: location{url: DefaultNATSURL, bucket: DefaultBucket}, status: 403, bodyJSON: true, failOpen: true}},
		{"environment", Config{}, env, settings{loc: location{url: env.natsURL, bucket: "other_blocks"}, status: 429, body: "slow down", failOpen: false}},
		{"config wins", Config{NATSURL: "nats://a:1", Bucket: "b", StatusCode: 403, FailMode: "open", ResponseBody: "{}"}, env,
			settings{loc: location{url: "nats://a:1", bucket: "b"}, status: 403, body: "{}", bodyJSON: true, failOpen: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.env.resolve(&tt.c)
			if err != nil || got != tt.want {
				t.Errorf("resolve = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := (envDefaults{status: "x", failMode: "sometimes"}).resolve(&Config{}); err == nil ||
		!strings.Contains(err.Error(), "BLOCKWIRE_ENFORCER_STATUS_CODE") || !strings.Contains(err.Error(), "BLOCKWIRE_FAIL_MODE") {
		t.Errorf("bad environment: %v, want both variables named", err)
	}
}

// go-pdk's own test harness: its client address is fixed, so this exercises a header block
// and the allowed path through the real PDK types.
func TestWithGoPDKHarness(t *testing.T) {
	w := newTestWriter(t, blk{kind: "header", name: "x-api-key", value: "stolen"})
	rt, _ := testRuntime(t, w.idx)
	// The harness does not answer kong.nginx.get_var, which the default body's request id uses.
	c := testConfig(t, rt, `{"response_body":"blocked"}`)
	for _, tt := range []struct {
		key    string
		status int
	}{{"stolen", 403}, {"fine", 200}} {
		env, err := test.New(t, test.Request{Method: "GET", Url: "http://example.com/v1/items?page=2",
			Headers: map[string][]string{"X-Api-Key": {tt.key}}})
		if err != nil {
			t.Fatal(err)
		}
		env.DoHttps(c)
		if env.ClientRes.Status != tt.status {
			t.Errorf("key %s: status %d, want %d", tt.key, env.ClientRes.Status, tt.status)
		}
	}
}
