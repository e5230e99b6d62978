package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/internal/app"
	"github.com/blockwire/blockwire/kongsync"
	"github.com/blockwire/blockwire/schemas"
)

// addKongFlags declares the Kong sync's settings, shared by serve and kongsync.
func addKongFlags(fs *pflag.FlagSet, k *app.KongSync) {
	fs.StringVar(&k.Kong.URL, "kong-admin-url", "", "Kong Admin API URL, e.g. http://kong:8001; serve runs the Kong sync when set")
	fs.Var(headerList{&k.Kong.Headers}, "kong-admin-header", `header for every Admin API request, "Name: value" (repeatable; e.g. "Kong-Admin-Token: …"); values are never logged`)
	fs.StringVar(&k.Kong.Workspace, "kong-workspace", "", "Kong Enterprise workspace (default: the default workspace)")
	fs.StringVar(&k.Kong.TLSCAFile, "kong-tls-ca", "", "CA bundle (PEM) that verifies the Admin API's certificate")
	fs.StringVar(&k.Kong.TLSCertFile, "kong-tls-cert", "", "client certificate (PEM) for mutual TLS to the Admin API")
	fs.StringVar(&k.Kong.TLSKeyFile, "kong-tls-key", "", "client key (PEM) for mutual TLS to the Admin API")
	fs.StringVar(&k.Kong.TLSServerName, "kong-tls-server-name", "", "name the Admin API's certificate is checked against (default: the URL's host)")
	fs.BoolVar(&k.Kong.TLSInsecureSkipVerify, "kong-tls-insecure-skip-verify", false, "accept any Admin API certificate (a lab only)")
	fs.DurationVar(&k.Kong.RequestTimeout, "kong-request-timeout", kongsync.DefaultRequestTimeout, "bound on each Admin API request")
	fs.DurationVar(&k.Window, "kong-sync-window", kongsync.DefaultWindow, "coalesce block changes this long into one reconcile")
	fs.DurationVar(&k.Period, "kong-sync-period", kongsync.DefaultPeriod, "full reconcile interval, repairing hand edits (drift)")
	fs.DurationVar(&k.LeaseTTL, "kong-sync-lease-ttl", kongsync.DefaultLeaseTTL, "how long a dead replica keeps the one-writer lease")
}

// headerList is a repeatable "Name: value" flag; from the environment, several headers are
// separated by newlines.
type headerList struct{ h *[]string }

func (l headerList) String() string {
	if l.h == nil || len(*l.h) == 0 {
		return ""
	}
	names := make([]string, len(*l.h))
	for i, h := range *l.h {
		name, _, _ := strings.Cut(h, ":")
		names[i] = name + ": …" // never print a value: it is a credential
	}
	return strings.Join(names, ", ")
}

// Set never fails: pflag would quote the value in its error, and the value is a credential.
// The configuration check refuses a malformed header without showing it.
func (l headerList) Set(v string) error {
	for line := range strings.SplitSeq(v, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			*l.h = append(*l.h, line)
		}
	}
	return nil
}

func (headerList) Type() string { return "header" }

func newKongSyncCmd(lo *logOptions) *cobra.Command {
	var (
		nc           broker.Config
		ks           app.KongSync
		once, dryRun bool
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "kongsync",
		Short: "Project the blocks onto Kong's Admin API: once (--once), as a plan (--once --dry-run), or until interrupted",
		Long: "Reads the blocks bucket from NATS (a running serve's, by default) and keeps Kong's managed " +
			"ip-restriction and request-termination plugins equal to it, as serve does with --kong-admin-url. " +
			"--once takes the one-writer lease, so it refuses to run beside a serve that is syncing.",
		Example: `  blockwire kongsync --kong-admin-url http://kong:8001 --once --dry-run
  blockwire kongsync --kong-admin-url http://kong:8001 --once
  blockwire kongsync status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ks.Kong.URL == "" {
				return errors.New("kongsync: --kong-admin-url (or BLOCKWIRE_KONG_ADMIN_URL) is required")
			}
			if dryRun && !once {
				return errors.New("kongsync: --dry-run goes with --once")
			}
			if err := ks.Check(); err != nil {
				return err
			}
			log, err := lo.logger(os.Stderr)
			if err != nil {
				return err
			}
			b, done, err := openBroker(cmd.Context(), nc)
			if err != nil {
				return err
			}
			defer done()
			s, err := ks.Syncer(b, nil, log)
			if err != nil {
				return err
			}
			if !once {
				return s.Run(cmd.Context())
			}
			plan, err := s.Once(cmd.Context(), dryRun)
			if err != nil {
				return fmt.Errorf("kongsync: %w", err)
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), plan)
			}
			printPlan(cmd.OutOrStdout(), plan, dryRun)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&once, "once", false, "reconcile once and exit")
	fs.BoolVar(&dryRun, "dry-run", false, "with --once: print the plan, write nothing")
	fs.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	addKongFlags(fs, &ks)
	addBrokerFlags(fs, &nc, false)
	cmd.AddCommand(newKongSyncStatusCmd())
	return cmd
}

func newKongSyncStatusCmd() *cobra.Command {
	var (
		nc     broker.Config
		bucket string
		key    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print what the syncing replica last did: state, managed plugins, bypass risks, unresolved scopes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			b, done, err := openBroker(ctx, nc)
			if err != nil {
				return err
			}
			defer done()
			st, err := kongsync.ReadStatus(ctx, b.JetStream(), bucket, key)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&bucket, "lease-bucket", kongsync.DefaultLeaseBucket, "KV bucket holding the sync's lease and status")
	fs.StringVar(&key, "status-key", "kongsync.status", "key of the status (kongsync-<workspace>.status for a workspace)")
	fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	addBrokerFlags(fs, &nc, false)
	return cmd
}

func printPlan(w io.Writer, p *kongsync.Plan, dryRun bool) {
	verb := "applied"
	if dryRun {
		verb = "planned (dry run, nothing written)"
	}
	fmt.Fprintf(w, "%d writes %s; %d managed plugins for %d active blocks\n", len(p.Ops), verb, len(p.Instances), p.Blocks)
	if len(p.Ops) > 0 {
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ACTION\tPLUGIN\tSCOPE\tENTRIES\tID")
		for _, op := range p.Ops {
			entries := "-"
			if op.Action != kongsync.ActionDelete {
				entries = fmt.Sprint(op.Entries)
			}
			action := op.Action
			if op.Drift {
				action += " (drift)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", action, op.Name, op.Scope, entries, op.ID)
		}
		_ = tw.Flush()
	}
	printFindings(w, p.Risks, p.Unresolved, p.PluginOnly)
}

func printStatus(w io.Writer, st *kongsync.Status) {
	fmt.Fprintf(w, "state %s, holder %s, kong %s, updated %s\n", st.State, st.Holder, st.Kong, st.UpdatedAt.Format(time.RFC3339))
	if !st.LastSuccess.IsZero() {
		fmt.Fprintf(w, "last success %s; last reconcile took %s and wrote %d; drift repaired %d times\n",
			st.LastSuccess.Format(time.RFC3339), st.Duration, st.Writes, st.DriftRepaired)
	}
	if st.Error != "" {
		fmt.Fprintln(w, "error:", st.Error)
	}
	fmt.Fprintf(w, "%d managed plugins for %d active blocks\n", len(st.Instances), st.Blocks)
	if len(st.Instances) > 0 {
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "PLUGIN\tSCOPE\tENTRIES\tID")
		for _, in := range st.Instances {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", in.Name, in.Scope, in.Entries, in.ID)
		}
		_ = tw.Flush()
	}
	printFindings(w, st.Risks, st.Unresolved, st.PluginOnly)
}

func printFindings(w io.Writer, risks []kongsync.Risk, unresolved []kongsync.Unresolved, pluginOnly map[schemas.EntityType]int) {
	if len(risks) > 0 {
		fmt.Fprintf(w, "%d bypass risks (Kong's precedence; the noname-prevention plugin still enforces these blocks):\n", len(risks))
		for _, r := range risks {
			fmt.Fprintln(w, "  "+r.String())
		}
	}
	if len(unresolved) > 0 {
		fmt.Fprintf(w, "%d block scopes not in Kong (the plugin's alone):\n", len(unresolved))
		for _, u := range unresolved {
			fmt.Fprintf(w, "  %s, %d blocks: %s\n", u.Kind, u.Blocks, u.Reason)
		}
	}
	if text := kongsync.PluginOnlyText(pluginOnly); text != "" {
		fmt.Fprintf(w, "plugin-only blocks (no native Kong equivalent): %s\n", text)
	}
}
