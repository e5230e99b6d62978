package kongdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// PluginInfo is what a go-pdk plugin server says about itself when run with -dump; Kong reads
// the same output through pluginserver_<name>_query_cmd.
type PluginInfo struct {
	Name     string
	Version  string
	Priority int
	Phases   []string
	// Schema is the Kong schema go-pdk derived from the config struct, kept raw so tests can
	// check exactly which fields survived (go-pdk silently drops fields it cannot represent).
	Schema json.RawMessage
	// Protocol is "ProtoBuf:1" for go-pdk v0.11.
	Protocol string
	// SocketPath is where the server will listen for the -kong-prefix the dump was run with.
	SocketPath string
}

// dumpOutput is go-pdk's serverInfo as encoded by -dump.
type dumpOutput struct {
	Protocol   string
	SocketPath string
	Plugins    []struct {
		Name     string
		Version  string
		Priority int
		Phases   []string
		Schema   json.RawMessage
	}
}

// Dump runs `binary -dump` and parses the JSON line it prints.
func Dump(ctx context.Context, binary string) (*PluginInfo, error) {
	return dump(ctx, binary, "", nil)
}

// dump runs the query command; prefix (when set) goes to -kong-prefix so that SocketPath is the
// path the server will really use, and env is appended as for the server process itself.
func dump(ctx context.Context, binary, prefix string, env []string) (*PluginInfo, error) {
	args := []string{"-dump"}
	if prefix != "" {
		args = append(args, "-kong-prefix", prefix)
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kongdriver: %s -dump: %w (stderr: %q)", binary, err, stderr.String())
	}
	info, err := parseDump(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("kongdriver: %s -dump: %w", binary, err)
	}
	return info, nil
}

// parseDump takes the last JSON object line of the output: a plugin's own init code may print
// before go-pdk gets to write its line.
func parseDump(out []byte) (*PluginInfo, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		line := bytes.TrimSpace(lines[i])
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var d dumpOutput
		if err := json.Unmarshal(line, &d); err != nil {
			return nil, fmt.Errorf("decode dump line: %w", err)
		}
		if len(d.Plugins) != 1 {
			return nil, fmt.Errorf("dump describes %d plugins, want 1", len(d.Plugins))
		}
		p := d.Plugins[0]
		return &PluginInfo{
			Name:       p.Name,
			Version:    p.Version,
			Priority:   p.Priority,
			Phases:     p.Phases,
			Schema:     p.Schema,
			Protocol:   d.Protocol,
			SocketPath: d.SocketPath,
		}, nil
	}
	return nil, errors.New("no JSON line in dump output")
}
