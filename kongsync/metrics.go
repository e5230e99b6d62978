package kongsync

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the Kong sync, all prefixed blockwire_kongsync_.
type metrics struct {
	writes     *prometheus.CounterVec // outcome
	reconciles *prometheus.CounterVec // result
	duration   prometheus.Histogram   // seconds per reconcile
	drift      prometheus.Counter     // writes that repaired Kong
	risks      *prometheus.GaugeVec   // kind
	leader     prometheus.Gauge       // 1 while this process holds the lease
	dbless     prometheus.Gauge       // 1 while standing down before a DB-less Kong
	authFails  prometheus.Counter     // reconciles stopped by 401/403
	managed    prometheus.Gauge       // managed plugins desired
	pluginOnly *prometheus.GaugeVec   // kind
	unresolved prometheus.Gauge       // block scopes Kong cannot hold
	lastOK     prometheus.Gauge       // unix time of the last successful reconcile
	body       prometheus.Histogram   // bytes of plugin bodies written
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockwire_kongsync_writes_total",
			Help: "Admin API write attempts (PUT, DELETE) by outcome: ok, retry, conflict, unauthorized, dbless, rejected, error.",
		}, []string{"outcome"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockwire_kongsync_reconciles_total",
			Help: "Reconciles by result: ok, failed, unauthorized, dbless, lease_lost.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockwire_kongsync_reconcile_seconds",
			Help:    "Time of one reconcile: read Kong, plan, write.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		drift: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockwire_kongsync_drift_repaired_total",
			Help: "Writes that repaired Kong after a managed plugin was edited or deleted by hand or restored from a backup.",
		}),
		risks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_bypass_risks",
			Help: "User-owned plugins that keep managed deny entries from applying (Kong's precedence), by kind: bypass, occupied, shadow.",
		}, []string{"kind"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_lease_holder",
			Help: "1 while this process holds the Kong sync lease (the one writer), else 0.",
		}),
		dbless: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_dbless",
			Help: "1 while the sync stands down because Kong runs DB-less (the plugin enforces there).",
		}),
		authFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockwire_kongsync_auth_failures_total",
			Help: "Reconciles stopped because Kong answered 401 or 403.",
		}),
		managed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_managed_plugins",
			Help: "Managed plugins the last plan wants in Kong.",
		}),
		pluginOnly: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_plugin_only_blocks",
			Help: "Active blocks Kong cannot enforce natively (header, cookie, query, jwt): the plugin's alone.",
		}, []string{"kind"}),
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_unresolved_scopes",
			Help: "Block scopes (service, route, consumer) not found in Kong.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockwire_kongsync_last_success_timestamp_seconds",
			Help: "Unix time of the last successful reconcile.",
		}),
		body: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockwire_kongsync_write_body_bytes",
			Help:    "Size of the plugin bodies written.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10),
		}),
	}
	for _, c := range []prometheus.Collector{m.writes, m.reconciles, m.duration, m.drift, m.risks, m.leader,
		m.dbless, m.authFails, m.managed, m.pluginOnly, m.unresolved, m.lastOK, m.body} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register kong sync metrics: %w", err)
		}
	}
	return m, nil
}
