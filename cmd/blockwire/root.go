package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// envPrefix: every configuration flag --foo-bar also reads BLOCKWIRE_FOO_BAR
// when not given (fromEnv names the flags that do not).
const envPrefix = "BLOCKWIRE_"

type logOptions struct {
	level  string
	format string
}

func newRootCmd() *cobra.Command {
	lo := &logOptions{}
	root := &cobra.Command{
		Use:           "blockwire",
		Short:         "Block attackers Noname Security detects, in Kong, within milliseconds",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd.Flags())
		},
	}
	root.PersistentFlags().StringVar(&lo.level, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&lo.format, "log-format", "auto", "log format: json, console, or auto (console on a terminal, JSON otherwise)")
	root.AddCommand(newServeCmd(lo), newBlockCmd(), newUnblockCmd(), newBlocksCmd(), newReplayCmd(), newExplainCmd(), newRebuildCmd(), newKongSyncCmd(lo), newVersionCmd())
	return root
}

// bindEnv fills every configuration flag the user did not give from its
// BLOCKWIRE_* variable, so Kong-style deployments can configure by
// environment alone.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || !fromEnv(f.Name) {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("read %s: %w", name, setErr)
			}
		}
	})
	return err
}

// fromEnv: flags that are actions of one invocation, not configuration,
// are never read from the environment: a stray BLOCKWIRE_CHECK_CONFIG would
// make every serve exit, a stray BLOCKWIRE_SERVICE would silently scope a
// `blockwire block`, BLOCKWIRE_KIND filter every `blocks` and `replay`.
// Where to connect and how to authenticate (--api-url, --webhook-token,
// --webhook-hmac-secret, --nats-*, --kong-*, --log-*) and the guardrails
// are configuration and keep reading it.
func fromEnv(flag string) bool {
	switch flag {
	case "check-config", "help", "dry-run", "once",
		// what block, unblock and explain act on, and how
		"key", "name", "claim", "service", "route", "for", "reason", "actor",
		// what blocks, replay and explain show, and how
		"kind", "limit", "since", "until", "incident", "value", "format", "json":
		return false
	}
	return true
}

func (lo *logOptions) logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(lo.level)
	if err != nil || level == zerolog.NoLevel {
		return zerolog.Logger{}, fmt.Errorf("parse --log-level %q: want debug, info, warn or error", lo.level)
	}
	switch lo.format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "auto":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Logger{}, fmt.Errorf("parse --log-format %q: want json, console or auto", lo.format)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "blockwire", version)
		},
	}
}
