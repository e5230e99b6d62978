package compose

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// ---- the compose file ----

type project struct {
	Name     string             `yaml:"name"`
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       *buildSpec   `yaml:"build"`
	Command     words        `yaml:"command"`
	Environment environment  `yaml:"environment"`
	Ports       []string     `yaml:"ports"`
	Expose      []string     `yaml:"expose"`
	Volumes     []string     `yaml:"volumes"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	Profiles    []string     `yaml:"profiles"`
}

type buildSpec struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// UnmarshalYAML accepts compose's short form (`build: ./dir`) and the long one.
func (b *buildSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain buildSpec
	return n.Decode((*plain)(b))
}

type healthcheck struct {
	Test words `yaml:"test"`
}

// words is a command: a YAML list, or a string that compose splits on spaces.
type words []string

func (w *words) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*w = strings.Fields(n.Value)
		return nil
	}
	var l []string
	err := n.Decode(&l)
	*w = l
	return err
}

// environment is compose's `environment:`, a mapping or a list of NAME=value. Values are raw:
// interpolate them with expand.
type environment map[string]string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	*e = environment{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
		return nil
	}
	var m map[string]string
	err := n.Decode(&m)
	maps.Copy(*e, m)
	return err
}

// dependsOn maps a dependency to its condition; the short (list) form means service_started.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for s, c := range m {
		if c.Condition == "" {
			c.Condition = "service_started"
		}
		(*d)[s] = c.Condition
	}
	return nil
}

var loadProject = sync.OnceValues(func() (*project, error) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		return nil, err
	}
	var p project
	if err := yaml.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("parse %s: %w", composeFile, err)
	}
	return &p, nil
})

func mustProject(t *testing.T) *project {
	t.Helper()
	p, err := loadProject()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Services) == 0 {
		t.Fatalf("%s has no services", composeFile)
	}
	return p
}

func mustService(t *testing.T, p *project, name string) service {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("%s: no service %q", composeFile, name)
	}
	return s
}

var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// expand interpolates a value as compose does when none of the variables is set in the
// environment: what the deployment does with its documented defaults. A required variable
// (${VAR:?msg}) is an error.
func expand(s string) (string, error) {
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		g := interpolation.FindStringSubmatch(m)
		switch g[2] {
		case ":-", "-":
			return g[3]
		case ":?", "?":
			err = fmt.Errorf("%q requires ${%s}: %s", s, g[1], g[3])
		}
		return ""
	})
	return out, err
}

func mustExpand(t *testing.T, s string) string {
	t.Helper()
	v, err := expand(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// published is one entry of `ports:` in the short syntax [ip:]host:container.
type published struct{ ip, host, container string }

func parsePort(spec string) (published, error) {
	spec, _, _ = strings.Cut(spec, "/") // protocol
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		return published{container: parts[0]}, nil
	case 2:
		return published{host: parts[0], container: parts[1]}, nil
	case 3:
		return published{ip: parts[0], host: parts[1], container: parts[2]}, nil
	}
	return published{}, fmt.Errorf("port %q: want [ip:]host:container", spec)
}

// flagValue is the argument after name in a command ("--routes", "a,b" or "--routes=a,b").
func flagValue(cmd []string, name string) (string, bool) {
	for i, a := range cmd {
		if a == name && i+1 < len(cmd) {
			return cmd[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}
