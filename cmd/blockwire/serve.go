package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/consumer"
	"github.com/blockwire/blockwire/internal/app"
)

func newServeCmd(lo *logOptions) *cobra.Command {
	var (
		cfg         app.Config
		checkConfig bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the webhook, the consumer and the Kong sync (embedded NATS unless --nats-url is set)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger(os.Stderr)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if checkConfig {
				if err := app.Check(cfg); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "configuration ok")
				return nil
			}
			return app.Serve(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&checkConfig, "check-config", false, "validate the configuration and exit")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "listen address of the HTTP API (webhook, probes, metrics)")
	fs.StringSliceVar(&cfg.Auth.Tokens, "webhook-token", nil, "bearer token(s) the webhook accepts, comma separated (prefer BLOCKWIRE_WEBHOOK_TOKEN)")
	fs.StringSliceVar(&cfg.Auth.HMACSecrets, "webhook-hmac-secret", nil, "HMAC-SHA256 secret(s) for X-Blockwire-Signature (prefer BLOCKWIRE_WEBHOOK_HMAC_SECRET)")
	fs.DurationVar(&cfg.Auth.MaxSkew, "webhook-max-skew", 5*time.Minute, "largest accepted clock skew of X-Blockwire-Timestamp")
	fs.BoolVar(&cfg.Auth.AllowUnauthenticated, "insecure-demo", false, "accept unauthenticated requests (loopback only; a local demo, never production)")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", 5*time.Second, "how long to wait for JetStream to store an incident before answering 503")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on the graceful shutdown")
	fs.IntVar(&cfg.Workers, "workers", 16, "incidents this process applies at once")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 10*time.Second, "time an incident may take to apply before it is redelivered (and how late one in hand is applied after a crash)")
	fs.BoolVar(&cfg.IngestOnly, "ingest-only", false, "serve the API but do not apply incidents (other replicas consume)")
	addGuardrailFlags(fs, &cfg.Guardrails)
	addBrokerFlags(fs, &cfg.Broker, true)
	addKongFlags(fs, &cfg.KongSync)
	return cmd
}

// addGuardrailFlags declares the limits on what may be blocked.
func addGuardrailFlags(fs *pflag.FlagSet, g *consumer.Guardrails) {
	fs.Var(prefixList{&g.NeverBlock}, "never-block", "addresses or ranges never to block, comma separated (Kong nodes, health checkers, Noname); loopback is always included")
	fs.IntVar(&g.MinPrefixV4, "min-prefix-v4", 16, "shortest IPv4 range that may be blocked")
	fs.IntVar(&g.MinPrefixV6, "min-prefix-v6", 48, "shortest IPv6 range that may be blocked")
	fs.DurationVar(&g.MaxDuration, "max-duration", 30*24*time.Hour, "longest block; longer requests are refused")
	fs.DurationVar(&g.DefaultDuration, "default-duration", time.Hour, "duration of a block whose incident gives none")
	fs.IntVar(&g.MaxActiveBlocks, "max-active-blocks", 1_000_000, "ceiling on active blocks; new blocks past it are refused")
}

// addBrokerFlags declares how to reach NATS, for serve (embedded unless a
// URL is given) and for the commands that read the streams (the make run
// system's server unless told otherwise).
func addBrokerFlags(fs *pflag.FlagSet, c *broker.Config, serve bool) {
	if serve {
		fs.StringVar(&c.URL, "nats-url", "", "external NATS URL(s), comma separated; empty starts an embedded NATS server")
		fs.StringVar(&c.DataDir, "data-dir", "./data", "embedded NATS: JetStream file store directory")
		fs.StringVar(&c.Listen, "nats-listen", "127.0.0.1:4222", "embedded NATS: listen address, for Kong's plugin and the replay, explain and rebuild commands")
		fs.IntVar(&c.Names.Replicas, "replicas", 1, "replicas of the streams and the bucket when blockwire creates them (3 on a NATS cluster)")
	} else {
		fs.StringVar(&c.URL, "nats-url", "nats://127.0.0.1:4222", "NATS URL(s), comma separated")
	}
	fs.StringVar(&c.CredsFile, "nats-creds", "", "external NATS: credentials file")
	fs.StringVar(&c.NKeySeedFile, "nats-nkey", "", "external NATS: NKey seed file")
	fs.StringVar(&c.User, "nats-user", "", "NATS user name (with no --nats-url: the embedded server's own login)")
	fs.StringVar(&c.Password, "nats-password", "", "NATS password (prefer BLOCKWIRE_NATS_PASSWORD)")
	fs.StringVar(&c.Token, "nats-token", "", "NATS token (prefer BLOCKWIRE_NATS_TOKEN)")
	fs.StringVar(&c.TLSCAFile, "nats-tls-ca", "", "external NATS: CA certificate file")
	fs.StringVar(&c.TLSCertFile, "nats-tls-cert", "", "external NATS: client certificate file")
	fs.StringVar(&c.TLSKeyFile, "nats-tls-key", "", "external NATS: client key file")
}
