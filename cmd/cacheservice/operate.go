package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/internal/version"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/metrics"
	"github.com/cacheservice/cacheservice/tracing"
)

// operations is what the server runs beside the API so that it can be
// operated: metrics, tracing, profiling and the sweeper.
type operations struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics.Metrics
	tracing *tracing.Tracing // nil unless an OTLP endpoint is configured

	// background counts the sweeper and the admin server; adminErr
	// receives the admin server's result.
	background sync.WaitGroup
	adminErr   chan error
}

// newOperations sets up metrics over db and, when configured, tracing.
func newOperations(ctx context.Context, cfg Config, db *database, logger *slog.Logger) (*operations, error) {
	ops := &operations{cfg: cfg, logger: logger, metrics: metrics.New(), adminErr: make(chan error, 1)}
	ops.metrics.WatchPool(db.store.Pool())
	if db.embedded != nil {
		ops.metrics.WatchEmbeddedPostgres(db.embedded)
	}
	var err error
	ops.tracing, err = tracing.New(ctx, tracing.Config{Endpoint: cfg.OTLPEndpoint, ServiceVersion: version.String(), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if ops.tracing != nil {
		logger.Info("tracing on", slog.String("endpoint", cfg.OTLPEndpoint))
	}
	return ops, nil
}

// interceptors returns the operators' interceptors, outermost first: the
// trace span encloses everything, metrics time the rest. The edge puts
// its own (the failure log, validation) inside them.
func (ops *operations) interceptors() []connect.Interceptor {
	var out []connect.Interceptor
	if ops.tracing != nil {
		out = append(out, ops.tracing.Interceptor())
	}
	return append(out, ops.metrics.Interceptor())
}

// start mounts /metrics (and pprof when enabled) on mux, or on a listener
// of their own when --metrics-addr is set, and starts the sweeper; both
// stop when ctx ends. stop waits for them.
//
// With authentication on, they are never mounted on the main port: there
// they would answer anyone, beside an API that asks for credentials. Without
// --metrics-addr they are then not served at all, and a line says so.
func (ops *operations) start(ctx context.Context, mux *http.ServeMux, m *manager.Manager) error {
	admin := mux
	if ops.cfg.MetricsAddr == "" && ops.cfg.authOn() {
		admin = nil
		ops.logger.Warn("/metrics and pprof are not served: with --auth-file they are served only on --metrics-addr, which is empty")
	}
	if ops.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", ops.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen for metrics: %w", err)
		}
		admin = http.NewServeMux()
		srv := newHTTPServer(admin, ops.logger, ops.cfg.HTTP)
		ops.logger.Info("metrics listening", slog.String("addr", ln.Addr().String()))
		ops.background.Go(func() { ops.adminErr <- serve(ctx, tlsServer{srv}, ln, ops.cfg.ShutdownTimeout, ops.logger) })
	}
	if admin != nil {
		ops.mountAdmin(admin)
	}
	if ops.cfg.Sweep.Interval > 0 {
		ops.background.Go(func() { m.RunSweeper(ctx, ops.cfg.Sweep) })
	}
	return nil
}

// mountAdmin mounts /metrics, and pprof when enabled, on admin.
func (ops *operations) mountAdmin(admin *http.ServeMux) {
	admin.Handle("/metrics", ops.metrics.Handler())
	if ops.cfg.PProf {
		admin.HandleFunc("/debug/pprof/", pprof.Index)
		admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// stop waits for the background work, which ends with the ctx given to
// start, and flushes the spans still buffered.
func (ops *operations) stop(ctx context.Context) error {
	ops.background.Wait()
	var err error
	select {
	case err = <-ops.adminErr:
	default:
	}
	if ops.tracing != nil {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ops.cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(err, ops.tracing.Shutdown(shutdownCtx))
	}
	return err
}
