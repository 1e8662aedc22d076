package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/internal/bench"
	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
)

// envConfig says what to measure: a running server, or one the tool starts.
type envConfig struct {
	target      string // URL of a running server; empty: start one
	databaseURL string // the database the ceiling uses (and a started server, if set)
	serverBin   string // a cacheservice binary to run as a separate process
	serverArgs  []string
	dataDir     string // the embedded database's directory; empty: a temporary one
	durable     bool
	dbMaxConns  int
	logger      *slog.Logger
}

// env is the system under test.
type env struct {
	baseURL     string
	databaseURL string          // empty when the ceiling cannot run
	serverPID   int             // the server's process, when it is a separate one
	dbPID       int             // the embedded database's postmaster, when started here
	serverDone  <-chan struct{} // closed when a separate server process exits
	serverKind  string          // how the server runs, for the report
	closers     []func()
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// startEnv brings up the database and the server that cfg asks for.
func startEnv(ctx context.Context, cfg envConfig) (_ *env, err error) {
	e := &env{baseURL: cfg.target, databaseURL: cfg.databaseURL, serverKind: "external, at " + cfg.target}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if cfg.target != "" {
		return e, nil
	}
	if e.databaseURL == "" {
		if err := e.startDatabase(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if err := store.Migrate(ctx, e.databaseURL); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	e.baseURL = "http://" + addr
	if cfg.serverBin != "" {
		err = e.execServer(ctx, cfg, addr)
	} else {
		err = e.serveInProcess(ctx, cfg, addr)
	}
	if err != nil {
		return nil, err
	}
	return e, waitReady(ctx, e.baseURL)
}

func (e *env) startDatabase(ctx context.Context, cfg envConfig) error {
	dir := cfg.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "cachebench-")
		if err != nil {
			return fmt.Errorf("create database directory: %w", err)
		}
		e.closers = append(e.closers, func() { os.RemoveAll(tmp) })
		// The database runs as its own user, who must be able to enter.
		if err := os.Chmod(tmp, 0o755); err != nil {
			return fmt.Errorf("open database directory: %w", err)
		}
		dir = tmp
	}
	pg, err := embeddedpg.Start(ctx, embeddedpg.Config{
		Dir:      filepath.Join(dir, "pg"),
		Durable:  cfg.durable,
		Logger:   cfg.logger,
		Settings: map[string]string{"max_connections": "200"},
	})
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := pg.Stop(stopCtx); err != nil {
			cfg.logger.Warn("stop embedded postgresql", "err", err)
		}
	})
	e.databaseURL = pg.ConnString(embeddedpg.DefaultDatabase)
	e.dbPID = pg.Pid()
	return nil
}

// execServer runs the real server binary as its own process, so that client
// and server share no Go runtime and the server's memory can be read.
func (e *env) execServer(ctx context.Context, cfg envConfig, addr string) error {
	args := []string{"serve", "--addr", addr, "--database-url", e.databaseURL}
	if cfg.dbMaxConns > 0 {
		args = append(args, "--db-max-conns", strconv.Itoa(cfg.dbMaxConns))
	}
	bin, kind := cfg.serverBin, filepath.Base(cfg.serverBin)
	if bin == "self" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary to run as the server: %w", err)
		}
		bin, kind = self, "cachebench serve: the service's packages without cmd/cacheservice's extras"
	}
	cmd := exec.Command(bin, append(args, cfg.serverArgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		// Pdeathsig fires when the thread that started the child ends, not
		// this process, and the Go runtime may retire threads: this
		// goroutine keeps its thread until the child is gone.
		runtime.LockOSThread()
		defer close(exited)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	e.serverPID, e.serverDone = cmd.Process.Pid, exited
	e.serverKind = fmt.Sprintf("separate process (%s)", kind)
	e.closers = append(e.closers, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return nil
}

// serveInProcess wires the service as the server command does, in this
// process. Client and server then share a runtime and CPU accounting, so
// the separate-process mode is the one to publish.
func (e *env) serveInProcess(ctx context.Context, cfg envConfig, addr string) error {
	st, err := store.Open(ctx, store.Config{URL: e.databaseURL, MaxConns: int32(cfg.dbMaxConns)})
	if err != nil {
		return err
	}
	e.closers = append(e.closers, st.Close)
	mux := http.NewServeMux()
	mux.Handle(service.NewHandler(manager.New(st, manager.DefaultConfig(), cfg.logger)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	e.serverKind = "in-process"
	e.closers = append(e.closers, func() {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutCtx)
	})
	return nil
}

// serve is 'cachebench serve': the in-process server on its own, until
// SIGTERM or SIGINT, so that --server-bin self measures a separate process
// even where no cacheservice binary is at hand.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cachebench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8094", "host:port to listen on")
	cfg := envConfig{logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	e := &env{}
	fs.StringVar(&e.databaseURL, "database-url", "", "PostgreSQL connection string (required)")
	fs.IntVar(&cfg.dbMaxConns, "db-max-conns", 8, "pool size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if e.databaseURL == "" {
		return errors.New("serve: --database-url is required")
	}
	defer e.close()
	if err := e.serveInProcess(ctx, cfg, *addr); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// freeAddr finds a loopback port nobody listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady calls Get until the server answers it, for at most 60s.
func waitReady(ctx context.Context, baseURL string) error {
	d, closeIdle, err := bench.NewRPCDriver(baseURL, bench.ConnectProto, 1)
	if err != nil {
		return err
	}
	defer closeIdle()
	var last error
	for range 600 {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = d.Get(callCtx, "readiness-probe")
		cancel()
		if last == nil || connect.CodeOf(last) == connect.CodeNotFound {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("server at %s not ready after 60s: %w", baseURL, last)
}
