package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/consumer/replay"
	"github.com/blockwire/blockwire/schemas"
)

// The history commands read the log and the audit trail straight from
// NATS (the make run system's embedded server by default): they need the
// streams, not serve.

// openReader connects and returns a reader of the log and the audit trail.
func openReader(ctx context.Context, c broker.Config) (*replay.Reader, func(), error) {
	b, done, err := openBroker(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	r, err := replay.NewReader(b.JetStream(), b.Names())
	if err != nil {
		done()
		return nil, nil, err
	}
	return r, done, nil
}

// openBroker connects to NATS, bounded in time so an unreachable server is
// a clear error, not a hang.
func openBroker(ctx context.Context, c broker.Config) (*broker.Broker, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, c)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s (is blockwire serve running?): %w", c.URL, err)
	}
	return b, func() { _ = b.Close(context.Background()) }, nil
}

func newReplayCmd() *cobra.Command {
	var (
		nc           broker.Config
		f            replay.Filter
		since, until string
		kind, format string
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Print every incident with what was done about it, from the log and the audit trail",
		Example: `  blockwire replay --since 2h
  blockwire replay --incident inc-42
  blockwire replay --kind ip --value 203.0.113.7 --format csv > ip.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if f.Since, err = parseWhen("since", since); err != nil {
				return err
			}
			if f.Until, err = parseWhen("until", until); err != nil {
				return err
			}
			f.Kind = schemas.EntityType(kind)
			if err := f.Validate(); err != nil {
				return err
			}
			w, err := replay.NewWriter(format, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			r, done, err := openReader(cmd.Context(), nc)
			if err != nil {
				return err
			}
			defer done()
			if err := r.Run(cmd.Context(), f, w.Write, progress(cmd.ErrOrStderr(), "replay")); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			return w.Close()
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (e.g. 2h, 7d)")
	fs.StringVar(&until, "until", "", "up to this time (RFC 3339) or this long ago")
	fs.StringVar(&f.Incident, "incident", "", "only this incident, its actions, and what later happened to its blocks")
	fs.StringVar(&kind, "kind", "", "only events about entities of this kind: "+kindsHelp)
	fs.StringVar(&f.Value, "value", "", "only events about this value (an address, a key, a token…)")
	fs.StringVar(&f.Name, "name", "", "with --value: the header, cookie or query name")
	fs.StringVar(&format, "format", replay.FormatTable, "table, jsonl or csv")
	addBrokerFlags(fs, &nc, false)
	return cmd
}

func newExplainCmd() *cobra.Command {
	var (
		nc     broker.Config
		name   blockName
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "explain (<kind> <value> | --key KEY)",
		Short: "Is it blocked, since when, until when, on which incidents, what was refused: its whole history",
		Example: `  blockwire explain ip 203.0.113.7
  blockwire explain header k-123 --name X-Api-Key`,
		Args: name.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := name.resolve(args)
			if err != nil {
				return err
			}
			r, done, err := openReader(cmd.Context(), nc)
			if err != nil {
				return err
			}
			defer done()
			ex, err := r.Explain(cmd.Context(), key)
			if err != nil {
				return fmt.Errorf("explain: %w", err)
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), ex)
			}
			printExplanation(cmd.OutOrStdout(), ex, time.Now())
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&asJSON, "json", false, "print as JSON")
	name.addFlags(fs)
	addBrokerFlags(fs, &nc, false)
	return cmd
}

func printExplanation(w io.Writer, ex *replay.Explanation, now time.Time) {
	fmt.Fprintf(w, "key %s\n", ex.Key)
	if b := ex.Block; b != nil {
		fmt.Fprintf(w, "BLOCKED until %s (%s left), since %s, source %s\n", b.ExpiresAt.Format(time.RFC3339),
			b.ExpiresAt.Sub(now).Round(time.Second), b.CreatedAt.Format(time.RFC3339), b.Source)
		fmt.Fprintf(w, "incidents: %s\n", strings.Join(b.IncidentIDs, ", "))
	} else {
		fmt.Fprintln(w, "not blocked now")
	}
	if len(ex.History) == 0 {
		fmt.Fprintln(w, "no history: blockwire never acted on this key")
		return
	}
	fmt.Fprintln(w, "history:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tACTION\tINCIDENT\tSEQ\tACTOR\tDETAIL")
	for _, ev := range ex.History {
		a := ev.Audit
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", ev.Time.Format(time.RFC3339), a.Action, dash(a.IncidentID), a.EventSeq, a.Actor, a.Detail)
	}
	_ = tw.Flush()
	if ex.Truncated {
		fmt.Fprintln(w, "(older records omitted)")
	}
}

func newRebuildCmd() *cobra.Command {
	var (
		nc     broker.Config
		g      consumer.Guardrails
		dryRun bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Recompute the blocks bucket from the incident log and apply the difference",
		Long: "Reads NONAME_INCIDENTS in order, applies blocks, extensions, unblocks, expiries and the " +
			"guardrails (give the same guardrail flags as serve), compares the result with noname_blocks " +
			"and writes the difference, each change audited. --dry-run only reports it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, done, err := openBroker(cmd.Context(), nc)
			if err != nil {
				return err
			}
			defer done()
			rep, err := consumer.Rebuild(cmd.Context(), consumer.RebuildConfig{
				JS: b.JetStream(), Names: b.Names(), Guardrails: g, DryRun: dryRun,
				Progress: progress(cmd.ErrOrStderr(), "rebuild"),
			})
			if err != nil {
				return fmt.Errorf("rebuild: %w", err)
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), rep)
			}
			printRebuild(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&dryRun, "dry-run", false, "report the difference, change nothing")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	addGuardrailFlags(fs, &g)
	addBrokerFlags(fs, &nc, false)
	return cmd
}

func printRebuild(w io.Writer, rep *consumer.RebuildReport) {
	verb := "applied"
	if !rep.Applied {
		verb = "would apply (dry run)"
	}
	fmt.Fprintf(w, "%d incidents read (%d not valid), %d active blocks implied by the log\n", rep.Incidents, rep.Invalid, rep.Active)
	fmt.Fprintf(w, "%s: create %d, update %d, remove %d; %d already right\n", verb, len(rep.Create), len(rep.Update), len(rep.Remove), rep.Unchanged)
	for _, l := range []struct {
		what string
		keys []string
	}{{"create", rep.Create}, {"update", rep.Update}, {"remove", rep.Remove}} {
		for i, k := range l.keys {
			if i == 10 {
				fmt.Fprintf(w, "  … and %d more to %s\n", len(l.keys)-10, l.what)
				break
			}
			fmt.Fprintf(w, "  %s %s\n", l.what, k)
		}
	}
}

// parseWhen reads an RFC 3339 time or a duration ago ("2h", "7d"); "" is zero.
func parseWhen(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time or a duration ago like 2h or 7d", flag, s)
	}
	return time.Now().Add(-d), nil
}

// progress reports long reads on stderr, at most once a second, when
// stderr is a terminal or the read is long.
func progress(w io.Writer, what string) func(done, total uint64) {
	f, isFile := w.(*os.File)
	tty := isFile && isTerminal(f)
	var last time.Time
	return func(done, total uint64) {
		if (!tty && total < 100000) || (time.Since(last) < time.Second && done != total) {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "%s: %d of %d messages read\n", what, done, total)
	}
}
