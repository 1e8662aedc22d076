package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
)

// WatchEmbeddedPostgres exposes the state of the embedded cluster: whether
// its postmaster runs, how often it started and how often it died unasked.
func (m *Metrics) WatchEmbeddedPostgres(s *embeddedpg.Server) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Subsystem: "embedded_postgres", Name: name, Help: help}
	}
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("up", "1 while the embedded PostgreSQL server runs and its socket file exists (clients can reach it), else 0.")), func() float64 {
			if s.State().Running {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts(opts("starts_total", "Times the embedded PostgreSQL server started and accepted connections.")), func() float64 {
			return float64(s.State().Starts)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts(opts("unexpected_exits_total", "Times the embedded PostgreSQL server exited without being stopped (a crash or an outside kill).")), func() float64 {
			return float64(s.State().UnexpectedExits)
		}),
	)
}
