// Package embeddedpg runs a private PostgreSQL cluster as a child process, for the server when no
// --database-url is given and for tests.
//
// It owns one directory: the cluster (Dir/pgdata) and its unix socket (in Dir itself) live there,
// and nothing else touches them. The cluster listens on no TCP port, and the postmaster never
// outlives this process: it shuts itself down if we die. This package must not know about the
// service's schema or hold connections of its own beyond start-up; callers connect with
// ConnString and run their own migrations.
package embeddedpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Config describes an embedded cluster.
type Config struct {
	// Dir is the root directory for the cluster; created if missing. The PGDATA and the unix
	// socket both live inside it.
	Dir string
	// Database is created if missing; default "cacheservice".
	Database string
	// Durable is true for the server (fsync on); false for tests (fsync=off,
	// synchronous_commit=off, full_page_writes=off).
	Durable bool
	// Logger receives PostgreSQL's own log lines and start/stop events; may be nil.
	Logger *slog.Logger
	// Settings are extra postgres -c settings, applied after (so overriding) ours.
	Settings map[string]string
	// Supervise, when positive, is how often a supervisor checks that the cluster can be reached
	// (its postmaster runs and its socket file exists) and restarts it when not. Zero leaves
	// restarts to the caller, as tests that stop the cluster on purpose need.
	Supervise time.Duration
}

const (
	// DefaultDatabase is the database Start creates when Config.Database is empty.
	DefaultDatabase = "cacheservice"
	// port only names the socket file (.s.PGSQL.5432): there is no TCP listener.
	port = 5432
	// superuser is the role initdb creates and ConnString connects as; the socket's 0700
	// permissions and trust authentication make the socket itself the access control.
	superuser = "postgres"
	// maxSocketPath is the longest unix socket path Linux accepts (sun_path is 108 bytes,
	// including the terminating NUL).
	maxSocketPath = 107
	// oldPostmasterWait bounds how long Start waits for a previous postmaster on the same
	// directory to finish shutting down.
	oldPostmasterWait = 30 * time.Second
)

// Server is a running (or stopped) embedded cluster.
type Server struct {
	cfg     Config // normalized: Dir absolute, Database and Logger set
	binDir  string
	dataDir string
	sockDir string
	acct    *account // nil unless we run as root

	mu   sync.Mutex
	proc *process // the current or last postmaster
	lock *os.File // Dir, flocked from Start (or Restart) until Stop

	stopSupervising func() // set while the supervisor runs

	starts, unexpectedExits atomic.Int64 // for State
}

// Start initializes the cluster on first use, starts it, waits until it accepts connections and
// creates cfg.Database if missing. On later starts it finds the existing cluster and keeps its
// data. ctx bounds only the start: the cluster runs until Stop, or until this process dies.
//
// Dir is locked first: a second Start on it, in this process or another, fails at once with
// ErrInUse. A Start that fails after creating Dir removes it again.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	created, err := s.lockDir()
	if err != nil {
		return nil, fmt.Errorf("start embedded postgresql: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		if created {
			_ = os.RemoveAll(s.cfg.Dir) // still locked: nobody else can be using it
		}
		s.unlockDir()
	}()
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if err := s.initCluster(ctx); err != nil {
		return nil, err
	}
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureDatabase(ctx, s.cfg.Database); err != nil {
		s.stopAfterFailure(ctx)
		return nil, err
	}
	s.startSupervisor()
	return s, nil
}

func newServer(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start embedded postgresql: no directory given")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start embedded postgresql: resolve directory %q: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The socket sits in Dir itself, the shortest path inside it.
	if sock := filepath.Join(dir, fmt.Sprintf(".s.PGSQL.%d", port)); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("start embedded postgresql: socket path %s is %d bytes, over the %d-byte unix socket limit: use a shorter data directory", sock, len(sock), maxSocketPath)
	}
	binDir, err := FindBinaries()
	if err != nil {
		return nil, fmt.Errorf("start embedded postgresql: %w", err)
	}
	acct, err := lookupServerAccount()
	if err != nil {
		return nil, fmt.Errorf("start embedded postgresql: %w", err)
	}
	if acct != nil {
		// Before anything is created, so a refusal leaves nothing behind.
		if err := acct.checkTraversable(dir); err != nil {
			return nil, fmt.Errorf("start embedded postgresql: %w", err)
		}
	}
	return &Server{
		cfg:     cfg,
		binDir:  binDir,
		dataDir: filepath.Join(dir, "pgdata"),
		sockDir: dir,
		acct:    acct,
	}, nil
}

// prepareDir, when we are root, hands Dir (created by lockDir) to the postgres user and checks
// that user can reach it.
func (s *Server) prepareDir() error {
	dir := s.cfg.Dir
	if s.acct == nil {
		return nil
	}
	if err := s.acct.checkTraversable(dir); err != nil {
		return err
	}
	return s.acct.chownTree(dir)
}

// initCluster runs initdb unless the cluster exists. It initializes a scratch directory and
// renames it into place, so a start killed half-way never leaves a half-made cluster behind.
func (s *Server) initCluster(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("look for cluster in %s: %w", s.dataDir, err)
	}
	if entries, err := os.ReadDir(s.dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("look for cluster in %s: directory is not empty but holds no cluster (no PG_VERSION)", s.dataDir)
	}
	scratch := s.dataDir + ".init"
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("remove leftover %s: %w", scratch, err)
	}
	args := []string{"-D", scratch, "-A", "trust", "-U", superuser, "-E", "UTF8", "--no-locale"}
	if !s.cfg.Durable {
		args = append(args, "--no-sync")
	}
	started := time.Now()
	cmd := s.command(ctx, "initdb", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(scratch)
		return fmt.Errorf("initialize cluster in %s: %w: %s", s.dataDir, err, oneLine(string(out)))
	}
	if err := os.Remove(s.dataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace empty %s: %w", s.dataDir, err)
	}
	if err := os.Rename(scratch, s.dataDir); err != nil {
		return fmt.Errorf("move new cluster into %s: %w", s.dataDir, err)
	}
	s.cfg.Logger.Info("initialized embedded postgresql cluster", slog.String("dir", s.dataDir), slog.Duration("took", time.Since(started)))
	return nil
}

// ConnString returns a pgx/libpq keyword DSN for database over the unix socket.
func (s *Server) ConnString(database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		dsnValue(s.sockDir), port, superuser, dsnValue(database))
}

// Pid returns the process id of the current (or last) postmaster, or 0 if none was started.
func (s *Server) Pid() int {
	if p := s.current(); p != nil {
		return p.pid
	}
	return 0
}

// Done is closed when the current postmaster exits, whether stopped or crashed.
func (s *Server) Done() <-chan struct{} {
	if p := s.current(); p != nil {
		return p.done
	}
	closed := make(chan struct{})
	close(closed)
	return closed
}

// Restart stops the cluster if it is running and starts it again on the same directory and
// socket, so ConnString stays valid. Tests use Stop and Restart to simulate an outage.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return fmt.Errorf("restart embedded postgresql: %w", err)
	}
	if _, err := s.lockDir(); err != nil {
		return fmt.Errorf("restart embedded postgresql: %w", err)
	}
	if err := s.launch(ctx); err != nil {
		s.unlockDir()
		return fmt.Errorf("restart embedded postgresql: %w", err)
	}
	s.startSupervisor()
	return nil
}

func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// ensureDatabase creates name unless it exists.
func (s *Server) ensureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("connect to create database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("check whether database %q exists: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == pgerrcode.DuplicateDatabase {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	s.cfg.Logger.Info("created database", slog.String("database", name))
	return nil
}

// settings returns the postgres command-line arguments, ours first so cfg.Settings can override.
func (s *Server) settings() []string {
	kv := [][2]string{
		{"listen_addresses", ""},
		{"unix_socket_directories", quoteListItem(s.sockDir)},
		{"unix_socket_permissions", "0700"},
		// Our logger stamps time; the severity must lead the line for forwardLog.
		{"log_line_prefix", ""},
		{"lc_messages", "C"},
	}
	// Durable settings are passed explicitly too, so an edited postgresql.conf cannot weaken them.
	durability := "off"
	if s.cfg.Durable {
		durability = "on"
	}
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		kv = append(kv, [2]string{name, durability})
	}
	for _, name := range slices.Sorted(maps.Keys(s.cfg.Settings)) {
		kv = append(kv, [2]string{name, s.cfg.Settings[name]})
	}
	args := []string{"-D", s.dataDir, "-p", fmt.Sprint(port)}
	for _, p := range kv {
		args = append(args, "-c", p[0]+"="+p[1])
	}
	return args
}

// dsnValue quotes v for a keyword/value connection string when it needs it.
func dsnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`+"\t\n") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// quoteListItem quotes a directory for PostgreSQL's comma-separated list settings.
func quoteListItem(v string) string {
	return `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
}

// oneLine folds command output into one line for an error message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}
