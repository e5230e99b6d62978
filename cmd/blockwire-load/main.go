// Command blockwire-load measures how many incidents a running `blockwire
// serve` accepts per second over loopback, and, in the same run, a reference:
// a bare handler that only decodes the JSON body and publishes it to
// JetStream on the same NATS server, waiting for the ack. The reference is
// the most this machine gives for "HTTP in, JetStream ack, 202 out"; the
// webhook/reference ratio is what blockwire's own work costs.
//
// The reference handler runs in a child process (this command re-executed
// with the hidden flag -serve-reference), not in the load generator: serve is
// a separate process, so the reference must be one too, or it would share the
// CPUs and the GC with the client goroutines and lose for that alone (see
// refprocess.go). The child is stopped at the end of the run and on
// SIGINT/SIGTERM, and the reference stream is deleted in every case.
//
// Runs alternate between the two targets (the machine is shared and noisy)
// and the report gives each run and the median of the runs for each side.
// Before each timed run the load waits until serve's consumers have worked
// off what earlier runs stored (-settle, see settle.go), so no run pays for
// background work caused by the one before.
//
// Exit status: 0 on success, 1 when setup fails or a run had more than 1% of
// non-202 answers (after printing everything), 2 for bad flags.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	targetBoth      = "both"
	targetWebhook   = "webhook"
	targetReference = "reference"

	maxErrorRate = 0.01 // a run above this fails the command
)

type config struct {
	URL         string        `json:"url"`
	Token       string        `json:"-"`
	NATSURL     string        `json:"natsUrl"`
	Concurrency int           `json:"concurrency"`
	Requests    int           `json:"requests"`
	Warmup      int           `json:"warmup"`
	Runs        int           `json:"runs"`
	Target      string        `json:"target"`
	JSON        bool          `json:"-"`
	Entities    int           `json:"entities"`
	Timeout     time.Duration `json:"timeoutNs"`
	Settle      time.Duration `json:"settleNs"`

	// Hidden: run as the reference child process (see refprocess.go).
	ServeReference bool   `json:"-"`
	Listen         string `json:"-"`
}

// hiddenFlags are for the reference child only and left out of -help.
var hiddenFlags = map[string]bool{"serve-reference": true, "listen": true}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("blockwire-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "base URL of the running `blockwire serve`")
	fs.StringVar(&cfg.Token, "token", os.Getenv("BLOCKWIRE_WEBHOOK_TOKEN"), "webhook bearer token (default $BLOCKWIRE_WEBHOOK_TOKEN)")
	fs.StringVar(&cfg.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server the reference publishes to: the one serve uses")
	fs.IntVar(&cfg.Concurrency, "c", 64, "concurrent requests (= keep-alive connections per target)")
	fs.IntVar(&cfg.Requests, "n", 20000, "requests per target per run")
	fs.IntVar(&cfg.Warmup, "warmup", 1000, "requests sent to a target before each of its runs, not counted")
	fs.IntVar(&cfg.Runs, "runs", 3, "runs per target, alternating targets; the report gives each and the median")
	fs.StringVar(&cfg.Target, "target", targetBoth, "what to load: both, webhook or reference")
	fs.BoolVar(&cfg.JSON, "json", false, "also print a JSON summary on stdout (the human report then goes to stderr)")
	fs.IntVar(&cfg.Entities, "entities", 2, "entities per incident (1-1000)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout of one request")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Minute, "before each timed run, wait at most this long until no JetStream consumer on -nats-url has pending messages (serve's backlog from the previous run); 0 does not wait")
	fs.BoolVar(&cfg.ServeReference, "serve-reference", false, "internal: serve the reference handler and print its address (the load's child process)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "internal: with -serve-reference, the listen address")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: blockwire-load [flags]\n\nLoad-tests POST /v1/incidents of a running `blockwire serve` against a reference run as a\nseparate process (decode JSON + JetStream publish on the same NATS server).\n\nFlags:\n")
		visible := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		visible.SetOutput(fs.Output())
		fs.VisitAll(func(f *flag.Flag) {
			if !hiddenFlags[f.Name] {
				visible.Var(f.Value, f.Name, f.Usage)
				def := f.DefValue
				if f.Name == "token" {
					def = "" // the default comes from the environment: a secret, not for -help
				}
				visible.Lookup(f.Name).DefValue = def
			}
		})
		visible.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	listenSet := false
	fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
	if listenSet && !cfg.ServeReference {
		return cfg, errors.New("-listen goes only with -serve-reference")
	}
	switch {
	case cfg.Concurrency < 1:
		return cfg, errors.New("-c must be at least 1")
	case cfg.Requests < 1:
		return cfg, errors.New("-n must be at least 1")
	case cfg.Warmup < 0:
		return cfg, errors.New("-warmup must not be negative")
	case cfg.Runs < 1:
		return cfg, errors.New("-runs must be at least 1")
	case cfg.Entities < 1 || cfg.Entities > 1000:
		return cfg, errors.New("-entities must be between 1 and 1000 (the incident schema's bounds)")
	case cfg.Timeout <= 0:
		return cfg, errors.New("-timeout must be positive")
	case cfg.Settle < 0:
		return cfg, errors.New("-settle must not be negative")
	case cfg.Target != targetBoth && cfg.Target != targetWebhook && cfg.Target != targetReference:
		return cfg, fmt.Errorf("-target must be both, webhook or reference, not %q", cfg.Target)
	}
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "blockwire-load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if cfg.ServeReference {
		code = serveReference(ctx, cfg.NATSURL, cfg.Listen, os.Stdin, os.Stdout, os.Stderr)
	} else {
		code = run(ctx, cfg, os.Args, os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// run does the whole measurement and returns the exit status. Resources
// (the reference process and stream above all) are released before it returns.
func run(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) int {
	out := stdout
	if cfg.JSON {
		out = stderr // stdout carries only the JSON
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "blockwire-load:", err)
		return 1
	}
	mach := thisMachine()
	cmd := commandLine(args)
	fmt.Fprintf(out, "blockwire-load: target %s, %d runs x %d requests (+%d warmup) per target, -c %d, %d entities per incident\n",
		cfg.Target, cfg.Runs, cfg.Requests, cfg.Warmup, cfg.Concurrency, cfg.Entities)

	client := newClient(cfg.Concurrency, cfg.Timeout)
	defer client.CloseIdleConnections()
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	prefix := "load-" + hex.EncodeToString(nonce)
	probe := incidentBodies(prefix+"-pre", 2, cfg.Entities)

	var targets []endpoint
	closeRef := func() {}
	refNew := 0 // 202s from the reference that were not duplicates: one message each
	cleanupFailed := false
	if cfg.Target != targetReference {
		if err := checkReady(ctx, client, cfg.URL); err != nil {
			return fail(err)
		}
		if cfg.Token == "" {
			fmt.Fprintln(stderr, "blockwire-load: warning: no token (-token or BLOCKWIRE_WEBHOOK_TOKEN); sending no Authorization header")
		}
		web := endpoint{name: targetWebhook, url: strings.TrimRight(cfg.URL, "/") + "/v1/incidents", token: cfg.Token}
		if err := preflight(ctx, client, web, probe[0]); err != nil {
			return fail(err)
		}
		fmt.Fprintf(out, "webhook:   %s (GET /readyz 200, one incident accepted)\n", web.url)
		targets = append(targets, web)
	}
	if cfg.Target != targetWebhook {
		store, err := openRefStore(ctx, cfg.NATSURL)
		if err != nil {
			return fail(err)
		}
		// The handler runs in a child process, like serve (see refprocess.go).
		proc, err := startReferenceProcess(ctx, cfg.NATSURL, stderr)
		if err != nil {
			if _, cerr := store.Close(); cerr != nil {
				fmt.Fprintln(stderr, "blockwire-load:", cerr)
			}
			return fail(err)
		}
		var once sync.Once
		closeRef = func() {
			once.Do(func() {
				// The child first, so nothing publishes while the stream is counted and deleted.
				if err := proc.stop(); err != nil && ctx.Err() == nil { // on Ctrl-C the child gets SIGINT too and leaves first
					fmt.Fprintln(stderr, "blockwire-load:", err)
					cleanupFailed = true
				}
				stored, err := store.Close()
				if err != nil {
					fmt.Fprintln(stderr, "blockwire-load:", err)
					cleanupFailed = true
					return
				}
				fmt.Fprintf(out, "reference process (pid %d) stopped; stream %s held %d messages for %d accepted requests (warmup included); deleted\n",
					proc.Pid(), refStream, stored, refNew)
				if stored != uint64(refNew) && ctx.Err() == nil { // an interrupt may cut off acks of stored messages
					fmt.Fprintln(stderr, "blockwire-load: warning: the reference stream does not hold one message per accepted request")
				}
			})
		}
		defer closeRef()
		re := endpoint{name: targetReference, url: proc.URL(), token: cfg.Token}
		if err := preflight(ctx, client, re, probe[1]); err != nil {
			return fail(err)
		}
		refNew++
		fmt.Fprintf(out, "reference: %s (child process pid %d) -> stream %s (subject %s, file storage) on %s\n",
			re.url, proc.Pid(), refStream, refSubject, cfg.NATSURL)
		targets = append([]endpoint{re}, targets...) // the reference goes first in odd runs
	}

	var st *settler // nil: no settling
	if cfg.Settle > 0 {
		var err error
		if st, err = newSettler(cfg.NATSURL); err != nil {
			fmt.Fprintf(stderr, "blockwire-load: warning: runs will not wait for serve's consumers to settle: %v\n", err)
		} else {
			defer st.Close()
			fmt.Fprintf(out, "settle:    before each timed run, wait (at most %s) until no JetStream consumer on %s has pending messages\n",
				cfg.Settle, cfg.NATSURL)
		}
	}

	var all []summary
	byTarget := map[string][]summary{}
	failed := false
	for r := 1; r <= cfg.Runs && ctx.Err() == nil; r++ {
		// Both targets get the same bodies in a run; ids differ between runs
		// and invocations, so no incident is ever a duplicate.
		bodies := incidentBodies(fmt.Sprintf("%s-r%02d", prefix, r), cfg.Requests, cfg.Entities)
		warm := incidentBodies(fmt.Sprintf("%s-w%02d", prefix, r), cfg.Warmup, cfg.Entities)
		order := targets
		if r%2 == 0 && len(targets) == 2 {
			order = []endpoint{targets[1], targets[0]}
		}
		for _, ep := range order {
			if ctx.Err() != nil {
				break
			}
			if len(warm) > 0 {
				w := summarize(runLoad(ctx, client, ep, warm, cfg.Concurrency))
				if ep.name == targetReference {
					refNew += w.Accepted - w.Duplicates
				}
				if w.Errors > 0 {
					fmt.Fprintf(out, "warmup %d/%d %s: errors %s\n", r, cfg.Runs, ep.name, errorText(w))
				}
			}
			if st != nil { // see settle.go
				waited, err := st.settle(ctx, cfg.Settle)
				switch {
				case ctx.Err() != nil: // the run below stops at once and says so
				case err != nil:
					fmt.Fprintf(out, "settle before run %d/%d %s: %v; measuring anyway\n", r, cfg.Runs, ep.name, err)
				case waited >= 200*time.Millisecond:
					fmt.Fprintf(out, "settle before run %d/%d %s: waited %.1fs for the consumers to catch up\n", r, cfg.Runs, ep.name, waited.Seconds())
				}
			}
			runtime.GC() // start every timed run from the same heap state
			s := summarize(runLoad(ctx, client, ep, bodies, cfg.Concurrency))
			s.Run = r
			if ep.name == targetReference {
				refNew += s.Accepted - s.Duplicates
			}
			if ctx.Err() != nil {
				fmt.Fprintf(out, "run %d/%d %s interrupted after %d accepted; not counted\n", r, cfg.Runs, ep.name, s.Accepted)
				break
			}
			fmt.Fprintln(out, runLine(s, cfg.Runs))
			if s.ErrorRate > maxErrorRate {
				failed = true
			}
			all = append(all, s)
			byTarget[ep.name] = append(byTarget[ep.name], s)
		}
	}
	closeRef()
	if cleanupFailed {
		failed = true
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "blockwire-load: interrupted; the figures below cover only the finished runs")
		failed = true
	}

	var medians []summary
	for _, name := range []string{targetWebhook, targetReference} {
		if runs := byTarget[name]; len(runs) > 0 {
			medians = append(medians, medianOf(runs))
		}
	}
	if len(medians) == 0 {
		fmt.Fprintln(out, "\nno finished run")
	} else {
		fmt.Fprintf(out, "\nmedian of %d run(s) per target (each metric separately):\n", len(byTarget[medians[0].Target]))
		printTable(out, medians)
	}
	var ratio *float64
	if w, ok := byTarget[targetWebhook]; ok {
		if rf, ok := byTarget[targetReference]; ok {
			if ref := medianOf(rf).AcceptedPerSec; ref > 0 {
				x := medianOf(w).AcceptedPerSec / ref
				ratio = &x
				fmt.Fprintf(out, "ratio webhook/reference = %.2f (accepted/s)\n", x)
				if x > 1 {
					fmt.Fprintln(out, "note: the webhook outran the reference, so the reference was no ceiling in this measurement "+
						"(noise, or serve's in-process NATS connection beating the reference's loopback TCP one)")
				}
			}
		}
	}
	mach.LoadAvg1End = loadAvg1("/proc/loadavg")
	fmt.Fprintf(out, "machine: %s\n", mach)
	fmt.Fprintf(out, "command: %s\n", cmd)
	if failed {
		fmt.Fprintf(out, "FAILED: a run had more than %.0f%% errors, was interrupted, the reference process died, or the reference stream could not be deleted\n", 100*maxErrorRate)
	}

	if cfg.JSON {
		rep := jsonReport{Command: cmd, Machine: mach, Config: cfg, Median: map[string]jsonSummary{}, Ratio: ratio, Failed: failed}
		for _, s := range all {
			rep.Runs = append(rep.Runs, toJSON(s))
		}
		for _, m := range medians {
			rep.Median[m.Target] = toJSON(m)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(err)
		}
	}
	if failed {
		return 1
	}
	return 0
}
