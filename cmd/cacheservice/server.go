package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

// run serves the cache API on ln until ctx ends, then shuts down in order:
// stop accepting and finish in-flight requests, close the pool, stop the
// embedded PostgreSQL.
func run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener, reloads *reloader) (err error) {
	defer ln.Close()
	sec, err := newSecurity(ctx, cfg, logger, reloads)
	if err != nil {
		return err
	}
	defer sec.stop()
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.close(context.WithoutCancel(ctx), cfg.ShutdownTimeout)) }()

	ops, err := newOperations(ctx, cfg, db, logger)
	if err != nil {
		return err
	}
	m := manager.New(db.store, cfg.Manager, logger, manager.WithObserver(ops.metrics))

	// The API edge answers everything but the operator endpoints that
	// ops.start mounts beside it.
	mux := http.NewServeMux()
	mux.Handle("/", service.NewEdge(m, service.Options{
		Logger:             logger,
		Interceptors:       ops.interceptors(),
		MaxRequestBytes:    cfg.MaxRequestBytes,
		CORSAllowedOrigins: cfg.CORSAllowedOrigins,
		Auth:               sec.auth,
	}))
	ops.metrics.Register(sec.collectors()...)

	// The sweeper and the metrics listener stop with ctx, or when the API
	// server fails; the pool closes only after they are done.
	opsCtx, stopOps := context.WithCancel(ctx)
	defer func() { stopOps(); err = errors.Join(err, ops.stop(ctx)) }()
	if err := ops.start(opsCtx, mux, m); err != nil {
		return err
	}

	srv := newHTTPServer(mux, logger)
	sec.serveTLS(srv)
	logger.Info("listening", slog.String("addr", ln.Addr().String()), slog.String("database", db.kind),
		slog.Bool("tls", sec.tls != nil), slog.Bool("auth", sec.auth != nil))
	if sec.auth == nil && !loopback(cfg.Addr) {
		logger.Warn("no authentication: anyone who reaches this address may read, write and delete every entry (--insecure-allow-open)")
	}
	return serve(ctx, srv, ln, cfg.ShutdownTimeout, logger)
}

// newHTTPServer serves HTTP/1.1 and unencrypted HTTP/2 (gRPC without TLS)
// on one port, with a timeout on every phase a slow client could stretch.
func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		// Long enough for a full request body on a slow link, short enough
		// that a stalled one does not hold its goroutine and buffer for long.
		// It also ends the rare long-lived stream (a health Watch, a
		// reflection session) after this long; their clients reconnect.
		ReadTimeout:    30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// serve runs srv on ln until ctx ends, then shuts it down gracefully,
// closing connections that are still busy after timeout.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, logger *slog.Logger) error {
	served := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig
			return
		}
		served <- srv.Serve(ln)
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", slog.Duration("timeout", timeout))
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		err = errors.Join(fmt.Errorf("shut down: requests still running after %v, closed them: %w", timeout, err), srv.Close())
	}
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serve: %w", serveErr))
	}
	return err
}
