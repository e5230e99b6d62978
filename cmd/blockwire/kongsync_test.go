package main

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwire/blockwire/internal/kongfake"
	"github.com/blockwire/blockwire/kongsync"
)

// serve with BLOCKWIRE_KONG_ADMIN_URL runs the Kong sync; kongsync --once --dry-run and kongsync
// status read what it did; kongsync --once refuses to write beside it.
func TestServeSyncsKong(t *testing.T) {
	bin := buildBinary(t)
	k := kongfake.New(t, kongfake.Options{RequireHeaders: map[string][]string{"Kong-Admin-Token": {"t0ken"}}})
	t.Setenv("BLOCKWIRE_KONG_ADMIN_URL", k.URL())
	t.Setenv("BLOCKWIRE_KONG_ADMIN_HEADER", "Kong-Admin-Token: t0ken")
	d := startServe(t, bin, t.TempDir(), freePort(t), freePort(t))
	postFile(t, d.api, "../../testdata/incidents/valid/ip-v4-block.json")

	deadline := time.Now().Add(60 * time.Second)
	for {
		p, ok := k.Plugin(kongsync.PluginID("", "ip-restriction", kongsync.Scope{}))
		if ok && slices.Equal(p.ConfigStrings("deny"), []string{"203.0.113.7"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kong never got the deny list:\n%s", d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	nats := []string{"--nats-url", d.nats}
	out := string(cliNATS(t, bin, append([]string{"kongsync", "--once", "--dry-run"}, nats...)...))
	if !strings.Contains(out, "0 writes planned (dry run, nothing written); 1 managed plugins for 1 active blocks") {
		t.Fatalf("kongsync --once --dry-run printed:\n%s", out)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		out = string(cliNATS(t, bin, append([]string{"kongsync", "status"}, nats...)...))
		if strings.Contains(out, "state synced") && strings.Contains(out, "ip-restriction  global  1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kongsync status printed:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	cmd := exec.Command(bin, append([]string{"kongsync", "--once"}, nats...)...)
	cmd.Env = os.Environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "holds the kong sync lease") {
		t.Fatalf("kongsync --once beside serve: %v\n%s", err, stderr.String())
	}
	d.stop(t) // the log is read once serve has exited
	if out := d.out.String(); strings.Contains(out, "t0ken") || !strings.Contains(out, "kong sync lease acquired") {
		t.Fatalf("serve's log shows the admin header's value, or no Kong sync:\n%s", out)
	}
}
