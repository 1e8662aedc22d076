package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector reads the pgx pool's statistics at scrape time, so the
// numbers are exact and cost nothing between scrapes.
type poolCollector struct {
	pool *pgxpool.Pool

	conns, maxConns                           *prometheus.Desc
	acquires, acquireSeconds, canceled, empty *prometheus.Desc
	emptyWaitSeconds, created, destroyed      *prometheus.Desc
}

// WatchPool exposes the statistics of pool.
func (m *Metrics) WatchPool(pool *pgxpool.Pool) {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "db_pool", name), help, labels, nil)
	}
	m.registry.MustRegister(&poolCollector{
		pool:             pool,
		conns:            desc("connections", "Connections in the pool by state: acquired (in use), idle, or constructing.", "state"),
		maxConns:         desc("max_connections", "Most connections the pool may open (--db-max-conns)."),
		acquires:         desc("acquires_total", "Successful connection acquisitions."),
		acquireSeconds:   desc("acquire_duration_seconds_total", "Total time spent in successful acquisitions."),
		canceled:         desc("canceled_acquires_total", "Acquisitions abandoned because the request's context ended."),
		empty:            desc("empty_acquires_total", "Successful acquisitions that had to wait because no idle connection was there; rising fast means the pool is too small."),
		emptyWaitSeconds: desc("empty_acquire_wait_seconds_total", "Total time those acquisitions waited for a connection."),
		created:          desc("connections_created_total", "Connections opened."),
		destroyed:        desc("connections_destroyed_total", "Connections closed by the pool, by reason: max_lifetime or max_idle.", "reason"),
	})
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.maxConns, c.acquires, c.acquireSeconds, c.canceled, c.empty, c.emptyWaitSeconds, c.created, c.destroyed} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.conns, float64(s.AcquiredConns()), "acquired")
	gauge(c.conns, float64(s.IdleConns()), "idle")
	gauge(c.conns, float64(s.ConstructingConns()), "constructing")
	gauge(c.maxConns, float64(s.MaxConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.acquireSeconds, s.AcquireDuration().Seconds())
	counter(c.canceled, float64(s.CanceledAcquireCount()))
	counter(c.empty, float64(s.EmptyAcquireCount()))
	counter(c.emptyWaitSeconds, s.EmptyAcquireWaitTime().Seconds())
	counter(c.created, float64(s.NewConnsCount()))
	counter(c.destroyed, float64(s.MaxLifetimeDestroyCount()), "max_lifetime")
	counter(c.destroyed, float64(s.MaxIdleDestroyCount()), "max_idle")
}
