package auth

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are plain atomics so that counting costs nothing on the hot path;
// Collector turns them into Prometheus metrics when scraped.
type counters struct {
	failures      [numReasons]atomic.Uint64
	denied        atomic.Uint64
	reloadsOK     atomic.Uint64
	reloadsFailed atomic.Uint64
	lastReloadOK  atomic.Int64 // unix seconds
}

func (c *counters) reloaded(ok bool) {
	if ok {
		c.reloadsOK.Add(1)
		c.lastReloadOK.Store(time.Now().Unix())
	} else {
		c.reloadsFailed.Add(1)
	}
}

var (
	descFailures = prometheus.NewDesc("cacheservice_auth_failures_total",
		"Calls refused as unauthenticated, by reason (no_credentials, unknown_token, invalid_jwt, expired_jwt, ...).",
		[]string{"reason"}, nil)
	descDenied = prometheus.NewDesc("cacheservice_auth_denied_total",
		"Authenticated calls refused as permission_denied (no grant for the scope and role).", nil, nil)
	descReloads = prometheus.NewDesc("cacheservice_auth_file_reloads_total",
		"Loads of the auth file by result: ok, or error (the previous file stayed in force).",
		[]string{"result"}, nil)
	descLastReload = prometheus.NewDesc("cacheservice_auth_file_last_success_timestamp_seconds",
		"When the auth file in force was loaded (Unix time).", nil, nil)
	descPrincipals = prometheus.NewDesc("cacheservice_auth_principals",
		"Principals in the auth file in force.", nil, nil)
	descJWTCache = prometheus.NewDesc("cacheservice_auth_jwt_cache_entries",
		"Verified JWTs remembered until their expiry.", nil, nil)
)

// Collector returns a Prometheus collector of the authenticator's counters,
// for the metrics package to register.
func (a *Authenticator) Collector() prometheus.Collector { return collector{a} }

type collector struct{ a *Authenticator }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFailures, descDenied, descReloads, descLastReload, descPrincipals, descJWTCache} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.a.stats
	for r := reasonNone + 1; r < numReasons; r++ {
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(s.failures[r].Load()), reasonNames[r])
	}
	ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(s.denied.Load()))
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(s.reloadsOK.Load()), "ok")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(s.reloadsFailed.Load()), "error")
	ch <- prometheus.MustNewConstMetric(descLastReload, prometheus.GaugeValue, float64(s.lastReloadOK.Load()))
	principals := 0
	if p := c.a.policy.Load(); p != nil {
		principals = p.Principals()
	}
	ch <- prometheus.MustNewConstMetric(descPrincipals, prometheus.GaugeValue, float64(principals))
	jwts := 0
	if c.a.oidc != nil {
		jwts = c.a.oidc.cached()
	}
	ch <- prometheus.MustNewConstMetric(descJWTCache, prometheus.GaugeValue, float64(jwts))
}
