package compose

import (
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// No Docker engine runs where these tests run, so they read the files the way compose and
// docker build would and check that every part is wired to the others and to the code: the
// service names, the ports, the environment, the plugin server settings and the plugin binary.

const (
	composeFile     = "docker-compose.yml"
	kongDockerfile  = "Dockerfile.kong"
	bwDockerfile    = "Dockerfile.blockwire"
	pluginName      = "noname-prevention"
	pluginPkg       = "./cmd/noname-prevention"
	blockwirePkg    = "./cmd/blockwire"
	kongImage       = "kong:3.8"
	goBuilderImage  = "golang:1.26"
	clusterProfile  = "cluster"
	natsClientPort  = "4222"
	kongAdminURL    = "http://kong:8001"
	webhookTokenVar = "BLOCKWIRE_WEBHOOK_TOKEN"
)

// ---- tests ----

func TestServicesAndDependencies(t *testing.T) {
	p := mustProject(t)
	for _, name := range []string{"nats", "postgres", "kong-migrations", "kong", "blockwire", "httpbin"} {
		mustService(t, p, name)
	}
	conditions := []string{"service_started", "service_healthy", "service_completed_successfully"}
	for name, s := range p.Services {
		for dep, cond := range s.DependsOn {
			t.Run(name+"->"+dep, func(t *testing.T) {
				d, ok := p.Services[dep]
				if !ok {
					t.Fatalf("%s depends on %q, which is not a service", name, dep)
				}
				if !slices.Contains(conditions, cond) {
					t.Fatalf("%s depends on %s with condition %q; want one of %v", name, dep, cond, conditions)
				}
				if cond == "service_healthy" && d.Healthcheck == nil {
					t.Fatalf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
				if len(s.Profiles) == 0 && len(d.Profiles) > 0 {
					t.Fatalf("%s runs in every profile but depends on %s, which runs only in %v", name, dep, d.Profiles)
				}
			})
		}
	}

	want := []struct{ from, to, condition string }{
		{"blockwire", "nats", "service_healthy"},
		{"kong-migrations", "postgres", "service_healthy"},
		{"kong", "postgres", "service_healthy"},
		{"kong", "kong-migrations", "service_completed_successfully"},
		{"kong", "nats", "service_healthy"},
	}
	for _, w := range want {
		t.Run("wants "+w.from+"->"+w.to, func(t *testing.T) {
			if got := mustService(t, p, w.from).DependsOn[w.to]; got != w.condition {
				t.Fatalf("%s depends on %s with %q, want %q", w.from, w.to, got, w.condition)
			}
		})
	}
	t.Run("blockwire does not wait for Kong", func(t *testing.T) {
		// Kong down must not stop incidents from being stored: the sync retries on its own.
		if _, ok := mustService(t, p, "blockwire").DependsOn["kong"]; ok {
			t.Fatal("blockwire depends on kong; with Kong down the webhook must still store incidents")
		}
	})
}

func TestVolumesAreDeclared(t *testing.T) {
	p := mustProject(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			src, _, ok := strings.Cut(v, ":")
			if !ok || strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") || strings.HasPrefix(src, "~") {
				continue // bind mount
			}
			if _, ok := p.Volumes[src]; !ok {
				t.Errorf("service %s mounts volume %q, not declared under volumes:", name, src)
			}
		}
	}
}

func TestPorts(t *testing.T) {
	p := mustProject(t)
	want := map[string][]published{
		"kong":      {{host: "8000", container: "8000"}, {ip: "127.0.0.1", host: "8001", container: "8001"}},
		"blockwire": {{host: "8080", container: "8080"}},
	}
	for name, s := range p.Services {
		t.Run(name, func(t *testing.T) {
			var got []published
			for _, spec := range s.Ports {
				pp, err := parsePort(mustExpand(t, spec))
				if err != nil {
					t.Fatal(err)
				}
				if pp.container == natsClientPort || pp.host == natsClientPort {
					t.Errorf("%s publishes %s: NATS stays on the compose network", name, spec)
				}
				if pp.container == "8001" && pp.ip != "127.0.0.1" {
					t.Errorf("%s publishes the Admin API as %q: bind it to 127.0.0.1", name, spec)
				}
				got = append(got, pp)
			}
			if !slices.Equal(got, want[name]) {
				t.Errorf("%s publishes %+v, want %+v", name, got, want[name])
			}
		})
	}
}

func TestHealthchecks(t *testing.T) {
	p := mustProject(t)
	tests := []struct {
		service string
		want    []string // words the healthcheck command must contain
	}{
		{"blockwire", []string{"http://127.0.0.1:8080/readyz"}},
		{"kong", []string{"kong", "health"}},
		{"nats", []string{"http://127.0.0.1:8222/healthz"}},
		{"postgres", []string{"pg_isready"}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := mustService(t, p, tt.service)
			if s.Healthcheck == nil {
				t.Fatalf("%s has no healthcheck", tt.service)
			}
			for _, w := range tt.want {
				if !slices.Contains(s.Healthcheck.Test, w) {
					t.Errorf("%s healthcheck %q lacks %q", tt.service, s.Healthcheck.Test, w)
				}
			}
		})
	}
}

// natsNodes are the NATS services of a profile ("" = the default, profile-less services).
func natsNodes(p *project, profile string) map[string]service {
	nodes := map[string]service{}
	for name, s := range p.Services {
		if !strings.HasPrefix(s.Image, "nats:") {
			continue
		}
		if (profile == "" && len(s.Profiles) == 0) || (profile != "" && slices.Contains(s.Profiles, profile)) {
			nodes[name] = s
		}
	}
	return nodes
}

// checkJetStreamNode checks one nats-server: JetStream on, its store on a volume, monitoring
// on 8222 for the /healthz check, an image new enough for per-key TTL (2.11+).
func checkJetStreamNode(t *testing.T, name string, s service) {
	t.Helper()
	if !regexp.MustCompile(`^nats:2\.(1[1-9]|[2-9][0-9])`).MatchString(s.Image) {
		t.Errorf("%s: image %q; blockwire needs nats-server 2.11 or newer", name, s.Image)
	}
	if !slices.Contains(s.Command, "-js") && !slices.Contains(s.Command, "--jetstream") {
		t.Errorf("%s: command %q does not enable JetStream (-js)", name, s.Command)
	}
	dir, ok := flagValue(s.Command, "-sd")
	if !ok {
		dir, ok = flagValue(s.Command, "--store_dir")
	}
	if !ok {
		t.Errorf("%s: command %q sets no JetStream store dir (-sd)", name, s.Command)
	} else if !slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+dir) }) {
		t.Errorf("%s: store dir %s is not on a volume (%v)", name, dir, s.Volumes)
	}
	if m, _ := flagValue(s.Command, "-m"); m != "8222" {
		t.Errorf("%s: command %q: want monitoring on 8222 (-m 8222) for /healthz", name, s.Command)
	}
	if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "http://127.0.0.1:8222/healthz") {
		t.Errorf("%s: want a healthcheck on http://127.0.0.1:8222/healthz", name)
	}
}

func TestNATS(t *testing.T) {
	p := mustProject(t)
	single := natsNodes(p, "")
	if len(single) != 1 {
		t.Fatalf("want one NATS service outside profiles, have %d", len(single))
	}
	for name, s := range single {
		checkJetStreamNode(t, name, s)
	}
}

func TestClusterProfile(t *testing.T) {
	p := mustProject(t)
	nodes := natsNodes(p, clusterProfile)
	want := []string{"nats-1", "nats-2", "nats-3"}
	var names []string
	for n := range nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("profile %s has NATS nodes %v, want %v", clusterProfile, names, want)
	}
	clusterNames := map[string]bool{}
	serverNames := map[string]bool{}
	for _, name := range names {
		s := nodes[name]
		t.Run(name, func(t *testing.T) {
			checkJetStreamNode(t, name, s)
			if len(s.Ports) > 0 {
				t.Errorf("%s publishes %v: cluster nodes stay on the compose network", name, s.Ports)
			}
			cn, _ := flagValue(s.Command, "--cluster_name")
			clusterNames[cn] = true
			sn, _ := flagValue(s.Command, "--server_name")
			if sn == "" || serverNames[sn] {
				t.Errorf("%s: --server_name %q missing or not unique", name, sn)
			}
			serverNames[sn] = true

			listen, ok := flagValue(s.Command, "--cluster")
			if !ok {
				t.Fatalf("%s: no --cluster listen URL", name)
			}
			lu, err := url.Parse(listen)
			if err != nil {
				t.Fatalf("%s: --cluster %q: %v", name, listen, err)
			}
			routes, ok := flagValue(s.Command, "--routes")
			if !ok {
				t.Fatalf("%s: no --routes", name)
			}
			routed := map[string]bool{}
			for _, r := range strings.Split(routes, ",") {
				ru, err := url.Parse(strings.TrimSpace(r))
				if err != nil {
					t.Fatalf("%s: route %q: %v", name, r, err)
				}
				if _, ok := nodes[ru.Hostname()]; !ok {
					t.Errorf("%s: route %q names no node of the cluster", name, r)
				}
				if ru.Port() != lu.Port() {
					t.Errorf("%s: route %q: the nodes listen for routes on port %s", name, r, lu.Port())
				}
				routed[ru.Hostname()] = true
			}
			for _, other := range names {
				if other != name && !routed[other] {
					t.Errorf("%s: --routes %q does not name %s", name, routes, other)
				}
			}
		})
	}
	if len(clusterNames) != 1 || clusterNames[""] {
		t.Errorf("cluster nodes disagree on --cluster_name: %v", clusterNames)
	}
}

func TestBlockwireService(t *testing.T) {
	p := mustProject(t)
	s := mustService(t, p, "blockwire")
	if s.Build == nil || path.Clean(s.Build.Dockerfile) != "compose/"+bwDockerfile {
		t.Fatalf("blockwire builds from %+v, want dockerfile compose/%s", s.Build, bwDockerfile)
	}
	if ctx := filepath.Clean(s.Build.Context); ctx != repoRoot {
		t.Errorf("blockwire build context %q; want the module root %q", s.Build.Context, repoRoot)
	}
	if !slices.Contains(s.Command, "serve") {
		t.Errorf("blockwire command %q does not run serve", s.Command)
	}
	img := parseDockerfile(t, bwDockerfile)
	env := effectiveEnv(t, img[len(img)-1], s)

	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"listens on 0.0.0.0:8080", func(t *testing.T) {
			if got := env["BLOCKWIRE_HTTP_ADDR"]; got != "0.0.0.0:8080" {
				t.Errorf("BLOCKWIRE_HTTP_ADDR = %q, want 0.0.0.0:8080", got)
			}
		}},
		{"NATS is the nats service", func(t *testing.T) {
			checkNATSURL(t, p, env["BLOCKWIRE_NATS_URL"])
			if u := env["BLOCKWIRE_NATS_URL"]; !strings.Contains(u, "nats:"+natsClientPort) {
				t.Errorf("BLOCKWIRE_NATS_URL = %q, want nats://nats:%s by default", u, natsClientPort)
			}
		}},
		{"Kong Admin API", func(t *testing.T) {
			if got := env["BLOCKWIRE_KONG_ADMIN_URL"]; got != kongAdminURL {
				t.Errorf("BLOCKWIRE_KONG_ADMIN_URL = %q, want %s", got, kongAdminURL)
			}
			u, _ := url.Parse(kongAdminURL)
			kong := mustService(t, p, u.Hostname())
			kimg := parseDockerfile(t, kongDockerfile)
			if listen := effectiveEnv(t, kimg[len(kimg)-1], kong)["KONG_ADMIN_LISTEN"]; !strings.Contains(listen, "0.0.0.0:"+u.Port()) {
				t.Errorf("kong KONG_ADMIN_LISTEN = %q: blockwire cannot reach %s", listen, kongAdminURL)
			}
		}},
		{"webhook token has a marked default", func(t *testing.T) {
			raw, ok := s.Environment[webhookTokenVar]
			if !ok {
				t.Fatalf("%s is not set: serve refuses to start without authentication", webhookTokenVar)
			}
			if !strings.HasPrefix(raw, "${"+webhookTokenVar+":-") {
				t.Errorf("%s = %q: take it from the environment, ${%s:-default}", webhookTokenVar, raw, webhookTokenVar)
			}
			def := mustExpand(t, raw)
			if len(def) < 16 || !strings.Contains(def, "change-me") {
				t.Errorf("%s default %q: want at least 16 characters, clearly marked change-me", webhookTokenVar, def)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

// checkNATSURL checks that every server of a NATS URL list is a NATS service's client port.
func checkNATSURL(t *testing.T, p *project, list string) {
	t.Helper()
	if list == "" {
		t.Fatal("no NATS URL")
	}
	for _, u := range strings.Split(list, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Scheme != "nats" {
			t.Fatalf("NATS URL %q: want nats://host:port", u)
		}
		if s, ok := p.Services[pu.Hostname()]; !ok || !strings.HasPrefix(s.Image, "nats:") {
			t.Errorf("NATS URL %q: %s is not a NATS service", u, pu.Hostname())
		}
		if pu.Port() != natsClientPort {
			t.Errorf("NATS URL %q: port %s, want %s", u, pu.Port(), natsClientPort)
		}
	}
}

// TestBlockwireEnvIsServeFlags: every BLOCKWIRE_* variable set for blockwire must be a flag of
// `blockwire serve` (serve ignores unknown variables, so a renamed flag would silently drop a
// setting).
func TestBlockwireEnvIsServeFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/blockwire")
	}
	p := mustProject(t)
	img := parseDockerfile(t, bwDockerfile)
	env := effectiveEnv(t, img[len(img)-1], mustService(t, p, "blockwire"))
	flags, err := serveFlags()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range env {
		if strings.HasPrefix(k, "BLOCKWIRE_") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "BLOCKWIRE_"), "_", "-"))
			if flags[flag] {
				return
			}
			t.Errorf("%s is set for blockwire, but `blockwire serve` has no --%s", name, flag)
		})
	}
}

func TestKongImage(t *testing.T) {
	stages := parseDockerfile(t, kongDockerfile)
	if len(stages) < 2 {
		t.Fatalf("%s: want a build stage and the Kong stage, have %d stages", kongDockerfile, len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if build.from != goBuilderImage || build.name == "" {
		t.Errorf("%s: first stage FROM %s AS %q, want FROM %s AS <name>", kongDockerfile, build.from, build.name, goBuilderImage)
	}
	if final.from != kongImage {
		t.Errorf("%s: final stage FROM %s, want %s", kongDockerfile, final.from, kongImage)
	}
	out, cgoOff := goBuild(t, build, pluginPkg)
	if !cgoOff {
		t.Errorf("%s: build %s with CGO_ENABLED=0 (a static binary in Kong's image)", kongDockerfile, pluginPkg)
	}
	var binPath string
	for _, c := range final.copies {
		if c.from == build.name && c.src == out {
			binPath = c.dst
		}
	}
	if binPath == "" {
		t.Fatalf("%s: the Kong stage does not COPY --from=%s %s", kongDockerfile, build.name, out)
	}
	if path.Base(binPath) != pluginName {
		t.Errorf("%s: plugin copied to %s; the file name is the plugin's name, want .../%s", kongDockerfile, binPath, pluginName)
	}

	p := mustProject(t)
	for _, name := range []string{"kong", "kong-migrations"} {
		t.Run(name, func(t *testing.T) {
			s := mustService(t, p, name)
			if s.Build == nil || path.Clean(s.Build.Dockerfile) != "compose/"+kongDockerfile || filepath.Clean(s.Build.Context) != repoRoot {
				t.Fatalf("%s builds from %+v, want context %s and dockerfile compose/%s", name, s.Build, repoRoot, kongDockerfile)
			}
			env := effectiveEnv(t, final, s)
			checks := []struct{ key, want string }{
				{"KONG_PLUGINSERVER_NONAME_PREVENTION_START_CMD", binPath},
				{"KONG_PLUGINSERVER_NONAME_PREVENTION_QUERY_CMD", binPath + " -dump"},
				{"KONG_DATABASE", "postgres"},
			}
			for _, c := range checks {
				if got := env[c.key]; got != c.want {
					t.Errorf("%s = %q, want %q", c.key, got, c.want)
				}
			}
			plugins := strings.Split(env["KONG_PLUGINS"], ",")
			if !slices.Contains(plugins, "bundled") || !slices.Contains(plugins, pluginName) {
				t.Errorf("KONG_PLUGINS = %q, want bundled,%s", env["KONG_PLUGINS"], pluginName)
			}
			if !slices.Contains(strings.Split(env["KONG_PLUGINSERVER_NAMES"], ","), pluginName) {
				t.Errorf("KONG_PLUGINSERVER_NAMES = %q, want %s", env["KONG_PLUGINSERVER_NAMES"], pluginName)
			}
			if pg := env["KONG_PG_HOST"]; p.Services[pg].Image == "" || !strings.HasPrefix(p.Services[pg].Image, "postgres:") {
				t.Errorf("KONG_PG_HOST = %q is not the Postgres service", pg)
			}
			checkNATSURL(t, p, env["BLOCKWIRE_NATS_URL"])
		})
	}
	t.Run("migrations", func(t *testing.T) {
		cmd := strings.Join(mustService(t, p, "kong-migrations").Command, " ")
		if !strings.Contains(cmd, "kong migrations bootstrap") {
			t.Errorf("kong-migrations runs %q, want kong migrations bootstrap", cmd)
		}
	})
	t.Run("demo client address", func(t *testing.T) {
		// compose/README.md's demo relies on Kong taking the client address from X-Forwarded-For.
		env := effectiveEnv(t, final, mustService(t, p, "kong"))
		if env["KONG_TRUSTED_IPS"] == "" || !strings.EqualFold(env["KONG_REAL_IP_HEADER"], "X-Forwarded-For") {
			t.Errorf("KONG_TRUSTED_IPS = %q, KONG_REAL_IP_HEADER = %q: the demo sends X-Forwarded-For",
				env["KONG_TRUSTED_IPS"], env["KONG_REAL_IP_HEADER"])
		}
	})
}

// TestPluginEnvironment: Nginx clears its workers' environment and a worker starts the plugin
// server, so every BLOCKWIRE_* variable the plugin reads must be passed with `env` in
// KONG_NGINX_MAIN_ENV, and every one the deployment sets must be one the plugin reads.
func TestPluginEnvironment(t *testing.T) {
	stages := parseDockerfile(t, kongDockerfile)
	final := stages[len(stages)-1]
	p := mustProject(t)
	env := effectiveEnv(t, final, mustService(t, p, "kong"))

	passed := map[string]bool{}
	for _, d := range strings.Split(env["KONG_NGINX_MAIN_ENV"], ";") {
		d = strings.TrimSpace(d)
		d = strings.TrimSpace(strings.TrimPrefix(d, "env "))
		if d != "" {
			passed[d] = true
		}
	}
	read := pluginEnvNames(t)

	var set []string
	for k := range env {
		if strings.HasPrefix(k, "BLOCKWIRE_") {
			set = append(set, k)
		}
	}
	slices.Sort(set)
	for _, name := range set {
		t.Run("set/"+name, func(t *testing.T) {
			if !passed[name] {
				t.Errorf("%s is set for Kong but not passed to the plugin: add it to KONG_NGINX_MAIN_ENV", name)
			}
			if !read[name] {
				t.Errorf("%s is set for Kong, but the plugin (enforcer/, %s) never reads it", name, pluginPkg)
			}
		})
	}
	for name := range read {
		t.Run("read/"+name, func(t *testing.T) {
			if !passed[name] {
				t.Errorf("the plugin reads %s, but KONG_NGINX_MAIN_ENV does not pass it: it would never arrive", name)
			}
		})
	}
}

// TestBuiltPackagesExist: the Dockerfiles build packages that exist.
func TestBuiltPackagesExist(t *testing.T) {
	for _, pkg := range []string{blockwirePkg, pluginPkg} {
		t.Run(pkg, func(t *testing.T) {
			if !hasGoFiles(pkg) {
				t.Errorf("%s, built by the Dockerfiles, has no Go files", pkg)
			}
		})
	}
	t.Run("blockwire image builds cmd/blockwire", func(t *testing.T) {
		stages := parseDockerfile(t, bwDockerfile)
		if stages[0].from != goBuilderImage {
			t.Errorf("%s: build stage FROM %s, want %s", bwDockerfile, stages[0].from, goBuilderImage)
		}
		out, cgoOff := goBuild(t, stages[0], blockwirePkg)
		if !cgoOff {
			t.Errorf("%s: build with CGO_ENABLED=0", bwDockerfile)
		}
		final := stages[len(stages)-1]
		if !slices.ContainsFunc(final.copies, func(c copyInstr) bool { return c.from == stages[0].name && c.src == out }) {
			t.Errorf("%s: the final stage does not copy %s from the build stage", bwDockerfile, out)
		}
	})
}
