package kongdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestDump(t *testing.T) {
	info, err := Dump(testContext(t), pluginBinary(t, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "calls" || !slices.Contains(info.Phases, "access") || info.Protocol != "ProtoBuf:1" {
		t.Fatalf("Dump = %+v, want name calls, access phase, ProtoBuf:1", info)
	}
	if !strings.Contains(string(info.Schema), `"calls"`) {
		t.Errorf("schema %s lacks the calls field", info.Schema)
	}
}

func TestStartInstance(t *testing.T) {
	d := startDriver(t, "noop")
	if got := d.Info().Name; got != "noop" {
		t.Fatalf("Info().Name = %q", got)
	}
	ctx := testContext(t)
	a := startInstance(t, d, nil)
	b := startInstance(t, d, map[string]any{})
	if a.ID() == 0 || a.ID() != a.Seq() || b.ID() == a.ID() {
		t.Errorf("ids %d (seq %d), %d: want id = __seq__, distinct", a.ID(), a.Seq(), b.ID())
	}
	c := startInstance(t, d, map[string]any{"__seq__": 77, "route_id": "r1"})
	if c.ID() != 77 {
		t.Errorf("ID with __seq__ 77 = %d", c.ID())
	}
	var sent map[string]any
	if err := json.Unmarshal(c.Config(), &sent); err != nil {
		t.Fatal(err)
	}
	if sent["route_id"] != "r1" || sent["service_id"] != nil || sent["__seq__"] != 77.0 {
		t.Errorf("config sent = %v", sent)
	}
	if st, err := c.Status(ctx); err != nil || st.ID != 77 {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if err := d.CloseInstance(ctx, c); err != nil {
		t.Fatalf("CloseInstance: %v", err)
	}
	if _, err := c.Access(ctx, Request{}); err == nil {
		t.Error("Access on a closed instance succeeded")
	}
	if _, err := d.StartInstance(ctx, map[string]any{"__seq__": "x"}); err == nil {
		t.Error("non-numeric __seq__ accepted")
	}
}

func TestAccessNoop(t *testing.T) {
	d := startDriver(t, "noop")
	inst := startInstance(t, d, nil)
	res, err := inst.Access(testContext(t), Request{ClientIP: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Allowed || len(res.Calls) != 0 || res.Status != 0 {
		t.Fatalf("Result = %+v, want allowed with no calls", res)
	}
}

func TestAccessCalls(t *testing.T) {
	d := startDriver(t, "calls")
	ctx := testContext(t)
	want := []string{"kong.client.get_forwarded_ip", "kong.request.get_header", "kong.request.get_raw_query"}
	inst := startInstance(t, d, map[string]any{"calls": []string{"forwarded_ip", "header:x-api-key", "raw_query"}})
	for range 3 { // the second and later events reuse the pooled connection
		res, err := inst.Access(ctx, Request{ClientIP: "192.0.2.1", Headers: map[string][]string{"X-Api-Key": {"k"}}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed || !slices.Equal(res.Calls, want) {
			t.Fatalf("Result = %+v, want allowed with calls %v", res, want)
		}
	}
	def := startInstance(t, d, nil)
	res, err := def.Access(ctx, Request{})
	if err != nil || !slices.Equal(res.Calls, want[:1]) {
		t.Fatalf("default config: %+v, %v; want one get_forwarded_ip", res, err)
	}
}

func TestAccessConcurrent(t *testing.T) {
	d := startDriver(t, "calls")
	inst := startInstance(t, d, map[string]any{"calls": []string{"forwarded_ip", "header:x-api-key", "raw_query"}})
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			for range 5 {
				res, err := inst.Access(ctx, Request{ClientIP: fmt.Sprintf("192.0.2.%d", i)})
				if err == nil && (!res.Allowed || len(res.Calls) != 3) {
					err = fmt.Errorf("result %+v", res)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestKillRestart(t *testing.T) {
	d := startDriver(t, "calls")
	ctx := testContext(t)
	inst := startInstance(t, d, nil)
	if _, err := inst.Access(ctx, Request{}); err != nil {
		t.Fatal(err)
	}
	pid := d.Pid()
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Access(ctx, Request{}); err == nil {
		t.Fatal("Access succeeded with the plugin killed")
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Pid() == pid {
		t.Error("Restart kept the pid")
	}
	// The new process does not know the instance: the driver starts it again, as Kong does.
	res, err := inst.Access(ctx, Request{ClientIP: "192.0.2.9"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Allowed || !res.Retried || len(res.Calls) != 1 {
		t.Fatalf("Result after restart = %+v, want allowed, retried, one call", res)
	}
	if res, err = inst.Access(ctx, Request{}); err != nil || res.Retried {
		t.Fatalf("second Access after restart = %+v, %v", res, err)
	}
}

func TestExit(t *testing.T) {
	d := startDriver(t, "exitplugin")
	inst := startInstance(t, d, nil)
	for range 2 { // the exit drops the connection; the next event must work on a new one
		res, err := inst.Access(testContext(t), Request{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed || res.Status != 403 || string(res.Body) != `{"message":"blocked by exitplugin"}` {
			t.Fatalf("Result = %+v, want a 403 exit", res)
		}
		if !slices.Equal(res.Headers["content-type"], []string{"application/json"}) ||
			!slices.Equal(res.Headers["x-blocked-by"], []string{"exitplugin", "test"}) {
			t.Errorf("Headers = %v", res.Headers)
		}
		if !slices.Equal(res.Calls, []string{"kong.response.exit"}) {
			t.Errorf("Calls = %v", res.Calls)
		}
	}
}

func TestUnknownMethod(t *testing.T) {
	d := startDriver(t, "echoplugin")
	ctx := testContext(t)
	inst := startInstance(t, d, map[string]any{"mode": "unknown"})
	_, err := inst.Access(ctx, Request{})
	if !errors.Is(err, ErrUnknownMethod) || !strings.Contains(err.Error(), "kong.service.response.get_status") {
		t.Fatalf("Access error = %v, want ErrUnknownMethod naming the method", err)
	}
	if _, err := startInstance(t, d, nil).Access(ctx, Request{}); err != nil {
		t.Fatalf("Access after the failed one: %v", err)
	}
}

func TestContextCancelled(t *testing.T) {
	d := startDriver(t, "noop")
	inst := startInstance(t, d, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := inst.Access(ctx, Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Access with a cancelled context = %v", err)
	}
	if _, err := inst.Access(testContext(t), Request{}); err != nil {
		t.Fatalf("Access after a cancelled one: %v", err)
	}
}
