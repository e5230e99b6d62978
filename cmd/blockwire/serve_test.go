package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const demoToken = "blockwire-demo-token-change-me"

// binDir holds the binary buildBinary compiles; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// build compiles this command, the first time it is called only.
var build = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "blockwire-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "blockwire")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	return bin, nil
})

// buildBinary compiles this command once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatalf("build blockwire: %v", err)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// daemon is a real `blockwire serve` process.
type daemon struct {
	cmd  *exec.Cmd
	api  string
	nats string
	out  *syncBuffer
}

// syncBuffer collects a process's output; tests read it while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startServe(t *testing.T, bin, dataDir string, httpPort, natsPort int) *daemon {
	t.Helper()
	d := &daemon{
		api:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		nats: fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		out:  &syncBuffer{},
	}
	d.cmd = exec.Command(bin, "serve", "--data-dir", dataDir,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort))
	d.cmd.Env = append(os.Environ(), "BLOCKWIRE_WEBHOOK_TOKEN="+demoToken)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(d.api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 20s:\n%s", d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, as a supervisor would, and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v after SIGTERM, want 0:\n%s", err, d.out)
	}
}

func postFile(t *testing.T, api, file string) map[string]any {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, api+"/v1/incidents", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+demoToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: %d %v, want 202", file, resp.StatusCode, got)
	}
	return got
}

// cli runs the blockwire command against a daemon's API and returns stdout.
func cli(t *testing.T, bin, api string, args ...string) []byte {
	t.Helper()
	return cliNATS(t, bin, append(args, "--api-url", api)...)
}

// cliNATS runs the blockwire command with args as given.
func cliNATS(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "BLOCKWIRE_WEBHOOK_TOKEN="+demoToken)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("blockwire %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func streamMsgs(t *testing.T, url string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "NONAME_INCIDENTS")
	if err != nil {
		t.Fatalf("look up stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestQuickstart is the README's path: serve with the demo token, the curl
// example answers 202, the incident is in the stream, and a restart on the
// same data directory keeps it (file store) and still deduplicates it.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	httpPort, natsPort := freePort(t), freePort(t)
	const incident = "../../testdata/incidents/valid/ip-v4-block.json"

	d := startServe(t, bin, dataDir, httpPort, natsPort)
	first := postFile(t, d.api, incident)
	if first["duplicate"] != false {
		t.Fatalf("first post answered %v, want duplicate false", first)
	}
	if n := streamMsgs(t, d.nats); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}

	// The README's manual block, then the list: the webhook's block and the manual one.
	cli(t, bin, d.api, "block", "ip", "198.51.100.23", "--for", "2h", "--reason", "manual test")
	deadline := time.Now().Add(15 * time.Second)
	for {
		var list struct{ Count int }
		if err := json.Unmarshal(cli(t, bin, d.api, "blocks", "--json"), &list); err != nil {
			t.Fatal(err)
		}
		if list.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks lists %d blocks, want 2", list.Count)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := string(cli(t, bin, d.api, "blocks")); !strings.Contains(out, "198.51.100.23") || !strings.Contains(out, "2 active blocks") {
		t.Fatalf("blocks printed:\n%s", out)
	}

	// The README's audit trail: replay, explain, rebuild --dry-run, straight from NATS.
	nats := []string{"--nats-url", d.nats}
	if out := string(cliNATS(t, bin, append([]string{"replay"}, nats...)...)); !strings.Contains(out, "blocked") || !strings.Contains(out, "inc-ip-v4") {
		t.Fatalf("replay printed:\n%s", out)
	}
	if out := string(cliNATS(t, bin, append([]string{"explain", "ip", "198.51.100.23"}, nats...)...)); !strings.Contains(out, "BLOCKED until") {
		t.Fatalf("explain printed:\n%s", out)
	}
	if out := string(cliNATS(t, bin, append([]string{"rebuild", "--dry-run"}, nats...)...)); !strings.Contains(out, "create 0, update 0, remove 0") {
		t.Fatalf("rebuild --dry-run printed:\n%s", out)
	}
	d.stop(t)

	d = startServe(t, bin, dataDir, httpPort, natsPort)
	if n := streamMsgs(t, d.nats); n != 2 {
		t.Fatalf("after restart the stream holds %d messages, want the 2 incidents", n)
	}
	again := postFile(t, d.api, incident)
	if again["duplicate"] != true || again["seq"] != first["seq"] {
		t.Fatalf("re-post after restart answered %v, want duplicate of seq %v", again, first["seq"])
	}
	d.stop(t)
}

func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantErr string
	}{
		{"token configured", []string{"serve", "--check-config", "--webhook-token", demoToken}, nil, ""},
		{"token from environment", []string{"serve", "--check-config"}, []string{"BLOCKWIRE_WEBHOOK_TOKEN=" + demoToken}, ""},
		{"no authentication", []string{"serve", "--check-config"}, nil, "no webhook token"},
		{"demo mode on a public address", []string{"serve", "--check-config", "--insecure-demo", "--http-addr", "0.0.0.0:8080"}, nil, "loopback"},
		{"short token", []string{"serve", "--check-config", "--webhook-token", "short"}, nil, "shorter than"},
		{"max skew of half the duplicate window", []string{"serve", "--check-config", "--webhook-token", demoToken, "--webhook-max-skew", "5m"}, nil, ""},
		{"max skew over half the duplicate window", []string{"serve", "--check-config", "--webhook-token", demoToken, "--webhook-max-skew", "6m"}, nil, "duplicate window"},
		{"bad log level", []string{"serve", "--check-config", "--log-level", "loud", "--webhook-token", demoToken}, nil, "log-level"},
		{"tls cert without key", []string{"serve", "--check-config", "--webhook-token", demoToken, "--nats-url", "nats://x:4222", "--nats-tls-cert", "c.pem"}, nil, "go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("BLOCKWIRE_WEBHOOK_TOKEN", "") // restored after the test
			os.Unsetenv("BLOCKWIRE_WEBHOOK_TOKEN")
			for _, kv := range tt.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			cmd := newRootCmd()
			cmd.SetArgs(tt.args)
			var out bytes.Buffer
			cmd.SetOut(&out)
			err := cmd.ExecuteContext(context.Background())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
			case tt.wantErr == "" && out.String() != "configuration ok\n":
				t.Fatalf("output %q", out.String())
			}
		})
	}
}

// TestCommandsRefuseBadInput: every command says what was wrong and exits
// non-zero, before touching anything.
func TestCommandsRefuseBadInput(t *testing.T) {
	closed := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	noAPI := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--format", "xml", "--nats-url", closed}, "not one of table, jsonl, csv"},
		{[]string{"replay", "--since", "yesterday"}, "--since"},
		{[]string{"replay", "--kind", "mac"}, "not one of ip"},
		{[]string{"replay", "--since", "1h", "--until", "2h"}, "before since"},
		{[]string{"replay", "--nats-url", closed}, "is blockwire serve running"},
		{[]string{"explain", "ip"}, "give <kind> <value>"},
		{[]string{"explain", "ip", "not-an-ip", "--nats-url", closed}, "name the block"},
		{[]string{"rebuild", "--min-prefix-v4", "0", "--nats-url", closed}, "is blockwire serve running"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "-1h"}, "at least 1s"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "-3d", "--api-url", noAPI}, "at least 1s"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "0d", "--api-url", noAPI}, "at least 1s"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "213504d", "--api-url", noAPI}, "too long"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "106752d", "--api-url", noAPI}, "too long"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "99999999999999999999d", "--api-url", noAPI}, "too long"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "3000000h", "--api-url", noAPI}, "want a duration"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "1500ms", "--api-url", noAPI}, "whole seconds"},
		{[]string{"block", "ip", "192.0.2.1", "--for", "90.5s", "--api-url", noAPI}, "whole seconds"},
		{[]string{"block", "ip"}, "accepts 2 arg"},
		{[]string{"unblock", "ip", "192.0.2.1", "--key", "ip.=.=.=.x"}, "not both"},
		{[]string{"blocks", "--api-url", "ftp://x"}, "not an http(s) URL"},
		{[]string{"serve", "--never-block", "10.0.0.0/33", "--check-config"}, "neither an address nor a CIDR"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := newRootCmd()
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
