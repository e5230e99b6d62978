package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/schemas"
	"github.com/blockwire/blockwire/webhook"
)

// The manual commands talk to a running serve over its HTTP API — one way,
// so they are authenticated, validated, guarded and audited like incidents.
type apiOptions struct {
	url     string
	tokens  []string
	secrets []string
	actor   string
	asJSON  bool
}

func addAPIFlags(fs *pflag.FlagSet, o *apiOptions) {
	fs.StringVar(&o.url, "api-url", "http://127.0.0.1:8080", "URL of a running blockwire serve")
	fs.StringSliceVar(&o.tokens, "webhook-token", nil, "bearer token of the API (the first of the list is used)")
	fs.StringSliceVar(&o.secrets, "webhook-hmac-secret", nil, "HMAC secret of the API (the first of the list is used)")
	fs.BoolVar(&o.asJSON, "json", false, "print the answer as JSON")
}

func (o *apiOptions) client() (*webhook.Client, error) {
	cfg := webhook.ClientConfig{URL: o.url}
	if len(o.tokens) > 0 {
		cfg.Token = o.tokens[0]
	}
	if len(o.secrets) > 0 {
		cfg.HMACSecret = o.secrets[0]
	}
	return webhook.NewClient(cfg)
}

// entityOptions name one entity on the command line.
type entityOptions struct {
	name, claim, service, route string
}

func addEntityFlags(fs *pflag.FlagSet, e *entityOptions) {
	fs.StringVar(&e.name, "name", "", "header, cookie or query parameter name (header, cookie, query kinds)")
	fs.StringVar(&e.claim, "claim", "", "JWT claim to match (jwt kind); without it the value is the whole token")
	fs.StringVar(&e.service, "service", "", "limit the block to this Kong service (name or id)")
	fs.StringVar(&e.route, "route", "", "limit the block to this Kong route (name or id)")
}

func (e *entityOptions) entity(kind, value string) (schemas.Entity, *schemas.Scope) {
	ent := schemas.Entity{Type: schemas.EntityType(kind), Value: value, Name: e.name, Claim: e.claim}
	var scope *schemas.Scope
	if e.service != "" || e.route != "" {
		scope = &schemas.Scope{Service: e.service, Route: e.route}
	}
	return ent, scope
}

// blockName names one block on the command line: <kind> <value> with the
// entity flags, or --key.
type blockName struct {
	ent entityOptions
	key string
}

func (n *blockName) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&n.key, "key", "", "the block's key, as `blockwire blocks` shows it")
	addEntityFlags(fs, &n.ent)
}

func (n *blockName) args(_ *cobra.Command, args []string) error {
	switch {
	case n.key != "" && len(args) > 0:
		return errors.New("give either <kind> <value> or --key, not both")
	case n.key == "" && len(args) != 2:
		return errors.New("give <kind> <value>, or --key")
	}
	return nil
}

// resolve returns the key. It is computed here, so a secret's raw value
// never leaves this machine: only its hash is in the key.
func (n *blockName) resolve(args []string) (string, error) {
	if n.key != "" {
		return n.key, nil
	}
	e, scope := n.ent.entity(args[0], args[1])
	k, err := consumer.KeyFor(e, scope)
	if err != nil {
		return "", fmt.Errorf("name the block: %w", err)
	}
	return k, nil
}

// maxValueLength is the contract's longest entity value, in characters.
const maxValueLength = 8192

// checkSecret makes the checks on a secret's value that the server cannot
// make on its hash: the secret itself is sent only as its SHA-256, so it
// never leaves this machine nor lands in the incident stream.
func checkSecret(e schemas.Entity, scope *schemas.Scope) error {
	if n := utf8.RuneCountInString(e.Value); n > maxValueLength {
		return fmt.Errorf("block %s: the value is %d characters, more than %d", e.Type, n, maxValueLength)
	}
	if _, err := consumer.KeyFor(e, scope); err != nil { // a whole token that is not a JWT, a missing --name
		return fmt.Errorf("block %s: %w", e.Type, err)
	}
	return nil
}

const kindsHelp = "ip, cidr, header, cookie, query, jwt or consumer"

func newBlockCmd() *cobra.Command {
	var (
		api    apiOptions
		ent    entityOptions
		dur    string
		reason string
	)
	cmd := &cobra.Command{
		Use:   "block <kind> <value>",
		Short: "Block an address, range, key, cookie, query value, token or consumer (kind: " + kindsHelp + ")",
		Example: `  blockwire block ip 203.0.113.7 --for 2h --reason "credential stuffing"
  blockwire block header k-123 --name X-Api-Key --for 30d --reason "leaked key"
  blockwire block jwt user-42 --claim sub --reason "account takeover"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration(dur)
			if err != nil {
				return err
			}
			e, scope := ent.entity(args[0], args[1])
			req := webhook.BlockRequest{Kind: e.Type, Value: e.Value, Name: e.Name, Claim: e.Claim,
				Reason: reason, Scope: scope, Actor: api.actorOrUser()}
			if hashed, ok := webhook.HashSecret(e); ok {
				if err := checkSecret(e, scope); err != nil {
					return err
				}
				req.Value, req.ValueSHA256 = "", hashed.ValueSHA256
			}
			if d > 0 {
				secs := int64(d / time.Second)
				req.DurationSeconds = &secs
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			got, err := c.Block(cmd.Context(), req)
			if err != nil {
				return explain(err)
			}
			return api.print(cmd.OutOrStdout(), got, fmt.Sprintf("block of %s %s stored as incident %s (seq %d), key %s\n",
				e.Type, args[1], got.ID, got.Seq, got.Key))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dur, "for", "", "how long, in whole seconds, e.g. 90m, 2h, 30d (default: serve's --default-duration)")
	fs.StringVar(&reason, "reason", "", "why, for the audit trail")
	fs.StringVar(&api.actor, "actor", "", "who is asking, for the audit trail (default $USER)")
	addEntityFlags(fs, &ent)
	addAPIFlags(fs, &api)
	return cmd
}

func newUnblockCmd() *cobra.Command {
	var (
		api  apiOptions
		name blockName
	)
	cmd := &cobra.Command{
		Use:   "unblock (<kind> <value> | --key KEY)",
		Short: "Lift a block, named by kind and value or by its key",
		Example: `  blockwire unblock ip 203.0.113.7
  blockwire unblock header k-123 --name X-Api-Key
  blockwire unblock --key 'ip.=.=.=.203_2E0_2E113_2E7'`,
		Args: name.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := name.resolve(args)
			if err != nil {
				return err
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			got, err := c.Unblock(cmd.Context(), key, api.actorOrUser())
			if err != nil {
				return explain(err)
			}
			return api.print(cmd.OutOrStdout(), got, fmt.Sprintf("unblock of %s stored as incident %s (seq %d)\n", got.Key, got.ID, got.Seq))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&api.actor, "actor", "", "who is asking, for the audit trail (default $USER)")
	name.addFlags(fs)
	addAPIFlags(fs, &api)
	return cmd
}

func newBlocksCmd() *cobra.Command {
	var (
		api   apiOptions
		kind  string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "blocks",
		Short: "List active blocks with their time left and the incidents behind them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := api.client()
			if err != nil {
				return err
			}
			list, err := c.Blocks(cmd.Context(), schemas.EntityType(kind), limit)
			if err != nil {
				return explain(err)
			}
			if api.asJSON {
				return writeJSONTo(cmd.OutOrStdout(), list)
			}
			printBlocks(cmd.OutOrStdout(), list, time.Now())
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&kind, "kind", "", "only this kind: "+kindsHelp)
	fs.IntVar(&limit, "limit", 100, "at most this many blocks")
	addAPIFlags(fs, &api)
	return cmd
}

func printBlocks(w io.Writer, list *webhook.BlockList, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tVALUE\tSCOPE\tTIME LEFT\tINCIDENTS\tSOURCE\tKEY")
	for _, b := range list.Blocks {
		value := b.Value
		if value == "" {
			value = "sha256:" + b.ValueSHA256[:min(12, len(b.ValueSHA256))] + "…"
		}
		scope := "everywhere"
		if b.Scope != nil {
			scope = strings.Trim("service="+b.Scope.Service+" route="+b.Scope.Route, " ")
		}
		left := b.ExpiresAt.Sub(now).Round(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Kind, dash(b.Name), value, scope, left,
			strings.Join(b.IncidentIDs, ","), b.Source, b.Key)
	}
	_ = tw.Flush()
	more := ""
	if list.Truncated {
		more = " (more exist: raise --limit)"
	}
	noun := "blocks"
	if list.Count == 1 {
		noun = "block"
	}
	fmt.Fprintf(w, "%d active %s%s\n", list.Count, noun, more)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (o *apiOptions) actorOrUser() string {
	if o.actor != "" {
		return o.actor
	}
	return os.Getenv("USER")
}

func (o *apiOptions) print(w io.Writer, v any, text string) error {
	if o.asJSON {
		return writeJSONTo(w, v)
	}
	_, err := io.WriteString(w, text)
	return err
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// explain adds the way out to the errors a user can fix.
func explain(err error) error {
	var p *webhook.ProblemError
	if errors.As(err, &p) && p.Status == 401 {
		return fmt.Errorf("%w\n(set BLOCKWIRE_WEBHOOK_TOKEN or --webhook-token to serve's token)", err)
	}
	return err
}

// maxDays is the most days a time.Duration holds (about 292 years).
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// parseDuration accepts Go durations plus whole days ("30d"); "" is 0 (the
// server's default). Durations under 1s, with a fraction of a second (the
// API counts whole seconds) or too long to represent are refused.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	bad := fmt.Errorf("--for %q: want a duration like 90m, 2h or 30d", s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && n > maxDays:
			return 0, fmt.Errorf("--for %q: too long, at most %dd", s, maxDays)
		case err != nil:
			return 0, bad
		case n < 1:
			return 0, fmt.Errorf("--for %q: a block lasts at least 1s", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil { // also refuses what overflows
			return 0, fmt.Errorf("--for %q: want a duration like 90m, 2h or 30d, at most %dd", s, maxDays)
		}
	}
	if d < time.Second {
		return 0, fmt.Errorf("--for %q: a block lasts at least 1s", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("--for %q: give whole seconds (%s or %s); a block's duration is counted in seconds", s, d.Truncate(time.Second), d.Truncate(time.Second)+time.Second)
	}
	return d, nil
}
