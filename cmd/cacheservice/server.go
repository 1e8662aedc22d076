package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
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
	edge := service.NewEdge(m, service.Options{
		Handlers:           apiHandlers(logger),
		Logger:             logger,
		Interceptors:       ops.interceptors(),
		MaxRequestBytes:    cfg.MaxRequestBytes,
		CORSAllowedOrigins: cfg.CORSAllowedOrigins,
		WriteTimeout:       cfg.HTTP.WriteTimeout,
		ResponseBudget:     int64(cfg.HTTP.ResponseBudget),
		OnCut:              ops.metrics.ObserveCut,
		Auth:               sec.auth,
	})
	mux.Handle("/", edge)
	ops.metrics.Register(sec.collectors()...)

	// The sweeper and the metrics listener stop with ctx, or when the API
	// server fails; the pool closes only after they are done.
	opsCtx, stopOps := context.WithCancel(ctx)
	defer func() { stopOps(); err = errors.Join(err, ops.stop(ctx)) }()
	if err := ops.start(opsCtx, mux, m); err != nil {
		return err
	}

	srv := newHTTPServer(service.RouteProcedures(mux, "/", edge), logger, cfg.HTTP)
	sec.serveTLS(srv)
	logger.Info("listening", slog.String("addr", ln.Addr().String()), slog.String("database", db.kind),
		slog.Bool("tls", sec.tls != nil), slog.Bool("auth", sec.auth != nil))
	if sec.auth == nil && !loopback(cfg.Addr) {
		logger.Warn("no authentication: anyone who reaches this address may read, write and delete every entry (--insecure-allow-open)")
	}
	var grpcSrv *service.GRPCServer
	if sec.tls == nil && cfg.HTTP.GRPCTransport == grpcTransportGRPCGo {
		grpcSrv = service.NewGRPCServer(srv.Handler, service.GRPCOptions{
			MaxStreams:      cfg.HTTP.MaxStreams,
			MaxRequestBytes: cfg.MaxRequestBytes,
			WriteTimeout:    cfg.HTTP.WriteTimeout,
			ReadTimeout:     srv.ReadTimeout,
			IdleTimeout:     srv.IdleTimeout,
			OnCut:           ops.metrics.ObserveCut,
			Logger:          logger,
		})
	}
	ln = refuseOver(ln, cfg.HTTP.MaxConns, ops.metrics.ObserveRefusedConn)
	return serve(ctx, &apiServer{http: srv, grpc: grpcSrv, ln: ln}, ln, cfg.ShutdownTimeout, logger)
}

// HTTPConfig bounds what clients can hold of the HTTP server: time,
// streams, response bytes and connections.
type HTTPConfig struct {
	// WriteTimeout bounds how long each 64 KiB of a response waits for the
	// client to take it (and, on HTTP/2, how long a connection may accept
	// no byte at all). It is not a deadline on the whole response, so a
	// long wait before the answer is never cut.
	WriteTimeout time.Duration
	// ResponseBudget bounds the bytes of responses held while being written.
	ResponseBudget int
	// MaxStreams bounds the concurrent HTTP/2 streams of one connection.
	MaxStreams int
	// MaxConns bounds the open connections; beyond it new ones are closed at
	// once. 0 is no bound.
	MaxConns int
	// GRPCTransport is what serves gRPC without TLS: grpcTransportGRPCGo
	// or grpcTransportNetHTTP.
	GRPCTransport string
}

// The values of --grpc-transport.
const (
	grpcTransportGRPCGo  = "grpc-go"
	grpcTransportNetHTTP = "net/http"
)

// defaultHTTPConfig is the HTTP server's configuration without flags.
func defaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		WriteTimeout:   service.DefaultWriteTimeout,
		ResponseBudget: service.DefaultResponseBudget,
		// gRPC's usual limit; Go's default of 250 lets one connection pin
		// more responses at once.
		MaxStreams:    100,
		GRPCTransport: grpcTransportGRPCGo,
	}
}

// newHTTPServer serves HTTP/1.1 and unencrypted HTTP/2 (gRPC without TLS)
// on one port, with a timeout on every phase a slow client could stretch.
// There is no server-wide WriteTimeout: it would cut a response that is
// slow to compute (a long poll), not one that is slow to be read; the
// edge's per-write deadlines (cfg.WriteTimeout) do that.
func newHTTPServer(h http.Handler, logger *slog.Logger, cfg HTTPConfig) *http.Server {
	errs := newErrorLog(logger)
	grpcLogTo.Store(errs) // grpc-go's errors too, if it serves gRPC
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
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: cfg.MaxStreams,
			// What one client can make the server buffer of its request
			// bodies: Go's defaults, stated because they are a bound.
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
			// A connection on which no byte can be written for this long
			// (the client's TCP window is shut) is closed.
			WriteByteTimeout: cfg.WriteTimeout,
		},
		ErrorLog: log.New(errs, "", 0),
	}
}

// errorLog is the http.Server's ErrorLog. net/http reports there mostly
// what clients do to their own connections (resets, garbage, handshakes
// abandoned), which a hostile client can make happen thousands of times a
// second; so at most errorLogBurst lines per errorLogWindow are warnings and
// the rest go at debug. A handler's panic is always an error.
type errorLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	window time.Time // start of the current window
	lines  int       // lines in it
}

const (
	errorLogBurst  = 10
	errorLogWindow = 10 * time.Second
)

func newErrorLog(logger *slog.Logger) *errorLog { return &errorLog{logger: logger} }

func (l *errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	level := slog.LevelWarn
	if strings.Contains(msg, "panic") {
		level = slog.LevelError
	} else {
		l.mu.Lock()
		if now := time.Now(); now.Sub(l.window) > errorLogWindow {
			l.window, l.lines = now, 0
		}
		l.lines++
		if l.lines > errorLogBurst {
			level = slog.LevelDebug
		}
		l.mu.Unlock()
	}
	l.logger.Log(context.Background(), level, msg, slog.String("source", source(msg)))
	return len(p), nil
}

// source names the library an error line comes from: grpc-go's carry its
// severity after a date.
func source(msg string) string {
	if strings.Contains(msg, "ERROR: ") || strings.Contains(msg, "WARNING: ") {
		return "grpc-go"
	}
	return "net/http"
}

// refuseOver wraps ln so that beyond max open connections a new one is
// closed at once and counted by refused, instead of waiting in the accept
// queue as netutil.LimitListener's would: so a crowd of idle connections
// cannot lock out health probes and real clients, which find room as soon
// as any connection closes. max 0 returns ln as it is.
func refuseOver(ln net.Listener, limit int, refused func()) net.Listener {
	if limit <= 0 {
		return ln
	}
	return &refusingListener{Listener: ln, free: make(chan struct{}, limit), refused: refused}
}

type refusingListener struct {
	net.Listener
	free    chan struct{} // one token per open connection
	refused func()
}

func (l *refusingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.free <- struct{}{}:
			return &countedConn{Conn: c, release: func() { <-l.free }}, nil
		default:
			l.refused()
			_ = c.Close()
		}
	}
}

// countedConn gives its token back once, on the first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// server is what serve runs: an http.Server, or apiServer.
type server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

// tlsServer serves its http.Server with TLS (the certificate comes from its
// TLSConfig) when it has a configuration.
type tlsServer struct{ *http.Server }

func (s tlsServer) Serve(ln net.Listener) error {
	if s.TLSConfig != nil {
		return s.ServeTLS(ln, "", "")
	}
	return s.Server.Serve(ln)
}

// apiServer serves the API on one port: gRPC without TLS with grpc-go
// (when grpc is set), everything else with Go's HTTP server.
type apiServer struct {
	http *http.Server
	grpc *service.GRPCServer // nil: Go's server serves gRPC too
	ln   net.Listener        // the port both serve, which Serve is given
}

func (s *apiServer) Serve(ln net.Listener) error {
	if s.grpc == nil {
		return tlsServer{s.http}.Serve(ln)
	}
	other, grpcConns := service.SplitGRPC(ln)
	go func() { _ = s.grpc.Serve(grpcConns) }()
	err := s.http.Serve(other)
	if !errors.Is(err, http.ErrServerClosed) {
		s.grpc.Stop() // not shut down: failed, and gRPC must not go on alone
	}
	return err
}

// Shutdown stops both servers gracefully; if ctx ends first, the caller
// closes them. The port stops accepting at once, as Go's server's does.
func (s *apiServer) Shutdown(ctx context.Context) error {
	if s.grpc == nil {
		return s.http.Shutdown(ctx)
	}
	_ = s.ln.Close()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	err := s.http.Shutdown(ctx)
	select {
	case <-stopped:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	return err
}

func (s *apiServer) Close() error {
	if s.grpc != nil {
		_ = s.ln.Close()
		s.grpc.Stop()
	}
	return s.http.Close()
}

// serve runs srv on ln until ctx ends, then shuts it down gracefully,
// closing connections that are still busy after timeout.
func serve(ctx context.Context, srv server, ln net.Listener, timeout time.Duration, logger *slog.Logger) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
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
