package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/kongsync"
)

// KongSync configures the Kong sync; serve runs it when Kong.URL is set.
type KongSync struct {
	// Kong says how to reach the Admin API; an empty URL turns the sync off.
	Kong kongsync.KongConfig
	// Window coalesces bucket changes into one reconcile. Default 250ms.
	Window time.Duration
	// Period is the interval of full reconciles that repair drift. Default 60s.
	Period time.Duration
	// LeaseTTL is how long a dead replica keeps the one-writer lease. Default 15s.
	LeaseTTL time.Duration
}

// Enabled reports whether the sync is configured.
func (k KongSync) Enabled() bool { return k.Kong.URL != "" }

// Check validates the sync's settings; settings without a URL are a mistake worth naming.
func (k KongSync) Check() error {
	if !k.Enabled() {
		if len(k.Kong.Headers) > 0 || k.Kong.Workspace != "" || k.Kong.TLSCAFile != "" || k.Kong.TLSCertFile != "" {
			return errors.New("check kong sync: --kong-admin-header, --kong-workspace and --kong-tls-* need --kong-admin-url")
		}
		return nil
	}
	if err := k.Kong.Validate(); err != nil {
		return fmt.Errorf("check kong sync: %w", err)
	}
	if err := kongsync.CheckTimings(k.Window, k.Period, k.LeaseTTL); err != nil {
		return fmt.Errorf("check kong sync: %w", err)
	}
	return nil
}

// Syncer builds the sync on an open broker, or returns nil when it is off.
func (k KongSync) Syncer(b *broker.Broker, reg prometheus.Registerer, log zerolog.Logger) (*kongsync.Syncer, error) {
	if !k.Enabled() {
		return nil, nil
	}
	client, err := kongsync.NewKongClient(k.Kong)
	if err != nil {
		return nil, err
	}
	return kongsync.New(kongsync.Config{
		Kong: client, KongURL: k.Kong.URL, JS: b.JetStream(), Names: b.Names(),
		Window: k.Window, Period: k.Period, LeaseTTL: k.LeaseTTL, Registry: reg, Logger: log,
	})
}
