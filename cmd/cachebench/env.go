package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
	"github.com/cacheservice/cacheservice/internal/embeddedpg"
)

// serverPackage is what cachebench builds when given no --server-bin.
const serverPackage = "github.com/cacheservice/cacheservice/cmd/cacheservice"

// envConfig says what to measure: a running server, or the real server
// binary, started by the tool over a database.
type envConfig struct {
	target      string // URL of a running server; empty: start one
	databaseURL string // the database the ceiling uses (and a started server, if set)
	serverBin   string // the cacheservice binary to run; empty: build it
	serverArgs  []string
	dataDir     string // the embedded database's directory; empty: a temporary one
	durable     bool
	dbMaxConns  int
	logger      *slog.Logger
}

// closers undo what was started, last first.
type closers []func()

func (c *closers) add(f func()) { *c = append(*c, f) }

func (c closers) close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// database is the PostgreSQL under the servers and the ceiling.
type database struct {
	url string
	pid int                // the embedded postmaster, whose children are measured; 0 if external
	pg  *embeddedpg.Server // nil if external
}

// startDatabase starts an embedded PostgreSQL, unless cfg names a database.
func startDatabase(ctx context.Context, cfg envConfig, cl *closers) (*database, error) {
	if cfg.databaseURL != "" {
		return &database{url: cfg.databaseURL}, nil
	}
	dir := cfg.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "cachebench-")
		if err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
		cl.add(func() { os.RemoveAll(tmp) })
		// The database runs as its own user, who must be able to enter.
		if err := os.Chmod(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("open database directory: %w", err)
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
		return nil, err
	}
	cl.add(func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := pg.Stop(stopCtx); err != nil {
			cfg.logger.Warn("stop embedded postgresql", "err", err)
		}
	})
	return &database{url: pg.ConnString(embeddedpg.DefaultDatabase), pid: pg.Pid(), pg: pg}, nil
}

// create makes an empty database of the embedded cluster and returns its
// connection string, so that two builds of the server never share a schema.
func (d *database) create(ctx context.Context, name string) (string, error) {
	if d.pg == nil {
		return "", fmt.Errorf("database %q: only an embedded cluster can be split per server", name)
	}
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %q: %w", name, err)
	}
	return d.pg.ConnString(name), nil
}

// server is the system under test: a process the tool started, or a
// running server at a URL (pid 0).
type server struct {
	baseURL string
	pid     int
	done    <-chan struct{} // closed when a started process exits; nil otherwise
	kind    string          // how the server runs, for the report
}

// exited reports whether a started server process has ended.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// buildServer compiles the server command into dir. It needs the go
// command and this module's source: the way to measure the tree at hand.
func buildServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "cacheservice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, serverPackage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s (or pass --server-bin): %w\n%s", serverPackage, err, out)
	}
	return bin, nil
}

// startServer runs the server binary bin as its own process over
// databaseURL, so that client and server share no Go runtime and the
// server's CPU and memory can be read, and waits until it answers.
func startServer(ctx context.Context, bin, databaseURL string, cfg envConfig, cl *closers) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--addr", addr, "--database-url", databaseURL}
	if cfg.dbMaxConns > 0 {
		args = append(args, "--db-max-conns", strconv.Itoa(cfg.dbMaxConns))
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
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	cl.add(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	s := &server{baseURL: "http://" + addr, pid: cmd.Process.Pid, done: exited,
		kind: fmt.Sprintf("separate process (%s)", filepath.Base(bin))}
	return s, waitReady(ctx, s)
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

// waitReady calls Get until the server answers it, for at most 60s, and
// stops early if the server process exits.
func waitReady(ctx context.Context, s *server) error {
	d, closeIdle, err := bench.NewRPCDriver(s.baseURL, bench.ConnectProto, 1)
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
		if s.exited() {
			return fmt.Errorf("server at %s exited before it was ready: %w", s.baseURL, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("server at %s not ready after 60s: %w", s.baseURL, last)
}
