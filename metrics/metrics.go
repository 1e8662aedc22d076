// Package metrics exposes what the server does as Prometheus metrics, on a
// registry of its own: RPCs by procedure and code with their latency, cache
// hits and misses, reservation outcomes, sweeps, the database pool and the
// embedded PostgreSQL. It only observes: nothing here changes what a request
// does, and nothing below cmd imports it (the manager reports through its
// Observer interface, which Metrics implements).
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

// namespace prefixes every metric of ours.
const namespace = "cacheservice"

// Metrics holds the server's metrics and the registry they are exposed from.
type Metrics struct {
	registry *prometheus.Registry

	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	lookups      *prometheus.CounterVec
	reservations *prometheus.CounterVec

	sweepDeleted     *prometheus.CounterVec
	sweepPasses      *prometheus.CounterVec
	sweepDuration    prometheus.Histogram
	sweepLastSuccess prometheus.Gauge

	responsesCut *prometheus.CounterVec
	connsRefused prometheus.Counter
}

var _ manager.Observer = (*Metrics)(nil)

// New returns Metrics on a fresh registry that also carries the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code (ok when it succeeded).",
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rpc_request_duration_seconds",
			Help: "Time to handle an RPC, from decoded request to response, by procedure.",
			// 0.5ms to about 8s: a warm database answers in a few ms, the
			// database timeout (5s by default) bounds the slowest.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}, []string{"procedure"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_lookups_total",
			Help: "Get calls by result: hit (an output was returned) or miss (not_found).",
		}, []string{"result"}),
		reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reservation_outcomes_total",
			Help: "Reservation calls by outcome: acquired, extended, taken_over, held_by_another, released, release_not_held, lock_timeout (a claim gave up waiting for the row lock).",
		}, []string{"outcome"}),
		sweepDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sweep_deleted_total",
			Help: "Rows the sweeper deleted, by kind: reservations (expired past retention) or entries (older than the entry TTL).",
		}, []string{"kind"}),
		sweepPasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sweep_passes_total",
			Help: "Sweeper passes by result: ok, incomplete (hit the batch limit; the next pass goes on) or error.",
		}, []string{"result"}),
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sweep_duration_seconds",
			Help:    "Time one sweeper pass took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		sweepLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sweep_last_success_timestamp_seconds",
			Help: "Unix time at which the last sweeper pass without error ended; 0 before the first.",
		}),
		responsesCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_responses_cut_total",
			Help: "Responses cut short by the edge, by reason: write_timeout (the client took nothing within --write-timeout; stream reset or connection closed) or budget (did not fit in --response-budget; answered resource_exhausted).",
		}, []string{"reason"}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_connections_refused_total",
			Help: "Connections closed on arrival because --max-connections were already open.",
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.latency, m.lookups, m.reservations,
		m.sweepDeleted, m.sweepPasses, m.sweepDuration, m.sweepLastSuccess,
		m.responsesCut, m.connsRefused,
		buildInfo(),
	)
	// Series that exist from the start, so rate() and alerts see a zero
	// rather than nothing before the first event.
	for _, result := range []string{"hit", "miss"} {
		m.lookups.WithLabelValues(result)
	}
	for _, o := range manager.Outcomes() {
		m.reservations.WithLabelValues(string(o))
	}
	for _, kind := range []string{"reservations", "entries"} {
		m.sweepDeleted.WithLabelValues(kind)
	}
	for _, result := range []string{"ok", "incomplete", "error"} {
		m.sweepPasses.WithLabelValues(result)
	}
	for _, c := range service.Cuts() {
		m.responsesCut.WithLabelValues(string(c))
	}
	return m
}

// Register adds collectors that other parts keep themselves (the
// authenticator's counters, the TLS certificate's expiry), so that they are
// served beside the server's own metrics.
func (m *Metrics) Register(cs ...prometheus.Collector) {
	m.registry.MustRegister(cs...)
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// ObserveCut counts one response the edge cut short; it is
// service.Options.OnCut.
func (m *Metrics) ObserveCut(c service.Cut) {
	m.responsesCut.WithLabelValues(string(c)).Inc()
}

// ObserveRefusedConn counts one connection refused at the connection cap.
func (m *Metrics) ObserveRefusedConn() { m.connsRefused.Inc() }

// ObserveLookup counts one Get by whether it found an output.
func (m *Metrics) ObserveLookup(hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.lookups.WithLabelValues(result).Inc()
}

// ObserveReservation counts one reservation outcome.
func (m *Metrics) ObserveReservation(o manager.Outcome) {
	m.reservations.WithLabelValues(string(o)).Inc()
}

// ObserveSweep counts what one sweeper pass deleted and how it ended.
func (m *Metrics) ObserveSweep(res manager.SweepResult, err error) {
	m.sweepDeleted.WithLabelValues("reservations").Add(float64(res.Reservations))
	m.sweepDeleted.WithLabelValues("entries").Add(float64(res.Entries))
	m.sweepDuration.Observe(res.Took.Seconds())
	switch {
	case err != nil:
		m.sweepPasses.WithLabelValues("error").Inc()
		return
	case res.Incomplete:
		m.sweepPasses.WithLabelValues("incomplete").Inc()
	default:
		m.sweepPasses.WithLabelValues("ok").Inc()
	}
	m.sweepLastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
}
