package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheservice/cacheservice/internal/version"
)

// buildInfo is cacheservice_build_info: always 1, its labels saying which
// build runs, so dashboards can join on it and a rollout shows as the
// version label changing replica by replica. The values come from
// internal/version, the one place a build is stamped.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; the labels say which build runs: version, commit and the Go version it was built with.",
		ConstLabels: prometheus.Labels{
			"version":   version.String(),
			"commit":    version.Commit(),
			"goversion": version.GoVersion(),
		},
	})
	g.Set(1)
	return g
}
