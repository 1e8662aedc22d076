// Package store persists cache entries and reservations in PostgreSQL with
// pgx. It owns the SQL, the schema and its migrations, transactions and row
// locks, and the one clock: every time that decides something is read in
// SQL from cache_now() (migration 003), never passed in. It holds no policy
// of its own: the manager says what may be replaced, for how long a lease
// is granted and which error code a caller sees. The one rule written in SQL
// is the claim rule of docs/ARCHITECTURE.md (the holder, or anyone once it expired), since
// it must be judged by the database's clock after the row lock is held.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/cacheservice/cacheservice/internal/setting"
)

// Sentinel errors returned at the store boundary; test with errors.Is.
var (
	// ErrNotFound means no row matched.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a row exists that the write was not allowed to replace.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge means a value does not fit what PostgreSQL can index: an
	// identity of long multi-byte strings can pass every character limit
	// and still exceed a btree entry's ~2.7 kB, after compression.
	ErrTooLarge = errors.New("too large to store")
	// ErrUnavailable wraps failures to reach the database: connection refused
	// or lost, timeouts, shutdown. Callers may retry.
	ErrUnavailable = errors.New("database unavailable")
	// ErrLockTimeout means a row lock was not granted within the lock
	// timeout: another session holds it. It is also ErrUnavailable.
	ErrLockTimeout = fmt.Errorf("lock wait timed out: %w", ErrUnavailable)
	// ErrClockOffset means the database's sessions see a clock moved by
	// the test-only setting cacheservice.clock_offset (see CheckClock).
	ErrClockOffset = errors.New("the test-only clock offset cacheservice.clock_offset is set")
)

// Config says how to reach the database.
type Config struct {
	// URL is a PostgreSQL connection string (URL or keyword/value form).
	URL string
	// MaxConns bounds the pool; zero means the default.
	MaxConns int32
	// Timeout bounds every database call; zero means the default.
	Timeout time.Duration
	// LockTimeout bounds each wait for a row lock inside a transaction
	// (a claim), below Timeout, so that one row held from outside cannot
	// hold a pool connection per waiting request for the whole Timeout.
	// Zero leaves PostgreSQL's setting.
	LockTimeout time.Duration
	// AllowClockOffset lets CheckClock accept sessions whose clock is moved
	// by cacheservice.clock_offset. For tests only: no flag sets it.
	AllowClockOffset bool
}

// Bounds of the settings, so a typo cannot disable a safeguard.
const (
	MinTimeout, MaxTimeout = time.Millisecond, time.Hour
	MinLockTimeout         = time.Millisecond
)

// DefaultConfig returns the pool's defaults (no URL): ten connections, five
// seconds for a database call, after which a cache is better off answering
// unavailable than holding its caller, and two for a lock wait.
//
// The lock timeout was measured: 64 clients claiming one key at once,
// through a pool of 64 connections so that all of them queue on the row
// lock, 50 rounds, on 2 cores under a load average of 25: the slowest claim
// (its lock wait included) took 340 to 580ms over four runs, the 99th
// percentile 270 to 425ms. 2s leaves more than three times the worst, and
// stays well below the 5s database deadline.
func DefaultConfig() Config {
	return Config{MaxConns: 10, Timeout: 5 * time.Second, LockTimeout: 2 * time.Second}
}

// Validate checks the settings' bounds. Errors are *setting.Errors naming
// the Config field; the caller names it as its users know it.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < MinTimeout || c.Timeout > MaxTimeout {
		errs = append(errs, &setting.Error{Field: "Timeout", Problem: fmt.Sprintf("must be between %v and %v, got %v", MinTimeout, MaxTimeout, c.Timeout)})
	}
	if c.LockTimeout < MinLockTimeout || c.LockTimeout >= c.Timeout {
		errs = append(errs, &setting.Error{Field: "LockTimeout", Problem: fmt.Sprintf("must be at least %v and below {Timeout} (%v), got %v", MinLockTimeout, c.Timeout, c.LockTimeout)})
	}
	return errors.Join(errs...)
}

// Store is a pool of connections to one database.
type Store struct {
	pool        *pgxpool.Pool
	db          detached // single statements go through here, not pool
	timeout     time.Duration
	lockTimeout time.Duration
	gets        coalescer[ID, Entry]             // Gets that queue, served together (coalesce.go)
	puts        coalescer[putArg, struct{}]      // Puts alike (putbatch.go)
	claims      coalescer[claimArg, ClaimResult] // claims' first round trips alike (claimbatch.go)
	// lockedClaims counts claims that took the row lock (ClaimReservation).
	lockedClaims atomic.Int64
	// shed counts connections that shed grown buffers (shed.go).
	shed        atomic.Int64
	allowOffset bool
}

// Open creates the connection pool. It does not contact the database; call
// Ping or Migrate to do so.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %s", parseProblem(err))
	}
	def := DefaultConfig()
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = def.MaxConns
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	poolCfg.MaxConns = cfg.MaxConns
	// Connections stay open across bursts instead of being re-dialled per
	// request; pgx's default idle time (30m) and health checks keep them.
	poolCfg.MinConns = min(poolCfg.MaxConns, 2)
	watch(&poolCfg.ConnConfig.Config)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("create connection pool: %w", err)
	}
	s := newStore(pool, cfg.Timeout, cfg.LockTimeout)
	s.allowOffset = cfg.AllowClockOffset
	return s, nil
}

// coalescedSlots is how many statements of one coalesced kind (Gets,
// Puts) run at once on a pool of maxConns connections: a quarter, and at
// least two. Fewer slots make bigger batches, cheaper per call; on 2
// cores at 64 clients two slots of 8 connections against four cost
// Gets ×0.93–0.96 of the server's CPU and ×0.73–0.79 of PostgreSQL's.
func coalescedSlots(maxConns int32) int32 {
	return max(min(2, maxConns), maxConns/4)
}

// lockTimeoutMillis is d as a value of PostgreSQL's lock_timeout: whole
// milliseconds, at least one, since zero there means no limit. It is zero
// when d is, for PostgreSQL's own setting to apply.
func lockTimeoutMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}

func newStore(pool *pgxpool.Pool, timeout, lockTimeout time.Duration) *Store {
	s := &Store{pool: pool, timeout: timeout, lockTimeout: lockTimeout}
	s.db = detached{s: s}
	slots := coalescedSlots(pool.Config().MaxConns)
	s.gets.slots = make(chan struct{}, slots)
	s.puts.slots = make(chan struct{}, slots)
	s.claims.slots = make(chan struct{}, slots)
	return s
}

// parseProblems are pgconn's reasons for refusing a connection string, in
// the order to look for them, each with what to say instead.
var parseProblems = [][2]string{
	{"failed to parse as URL", "not a valid URL"},
	{"unterminated quoted string", "a quoted value is not closed"},
	{"forbidden NUL byte", "it holds a NUL byte"},
	{"invalid keyword/value", "not valid keyword=value pairs"},
	{"failed to parse as keyword/value", "not valid keyword=value pairs"},
	{"could not match", "the numbers of hosts and ports differ"},
	{"invalid port", "a port is not a number from 1 to 65535"},
	{"sslmode is invalid", "sslmode is not one of disable, allow, prefer, require, verify-ca, verify-full"},
	{"invalid sslcertmode", "sslcertmode is invalid"},
	{"invalid connect_timeout", "connect_timeout is not a number of seconds"},
	{"failed to configure TLS", "the TLS settings (sslmode, sslrootcert, sslcert, sslkey...) cannot be used"},
	{"failed to read service", "the service file cannot be read"},
	{"target_session_attrs", "target_session_attrs is invalid"},
	{"min_protocol_version", "min_protocol_version or max_protocol_version is invalid"},
	{"max_protocol_version", "min_protocol_version or max_protocol_version is invalid"},
	{"channel_binding", "channel_binding is invalid"},
	{"require_auth", "require_auth is invalid"},
}

// parseProblem says what is wrong with a connection string without quoting
// any of it. pgconn's own message redacts the password only when it can
// parse the string, which it just failed to do (a "password = x" with
// spaces is printed whole), and its inner errors quote values.
func parseProblem(err error) string {
	msg := err.Error()
	for _, p := range parseProblems {
		if strings.Contains(msg, p[0]) {
			return p[1] + " (the string is not shown: it may hold a password)"
		}
	}
	return "not a valid PostgreSQL connection string (the string is not shown: it may hold a password)"
}

// Close closes every connection of the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool for statistics.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return classify("ping", s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		return conn.Ping(ctx)
	}))
}

// CheckClock fails with ErrClockOffset when a session of the database sees
// a non-zero cacheservice.clock_offset, unless Config.AllowClockOffset. The
// setting moves cache_now(), which judges every lease, and PostgreSQL takes
// it from a connection string, ALTER DATABASE or ALTER ROLE: one replica
// configured so would take over live reservations or keep dead ones. A
// server calls it once at start, after Ping; a value set later by ALTER
// DATABASE reaches only new sessions and is not seen.
func (s *Store) CheckClock(ctx context.Context) error {
	if s.allowOffset {
		return nil
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var offset string
	var moved bool
	err := s.db.QueryRow(ctx, `SELECT coalesce(current_setting('cacheservice.clock_offset', true), ''),
		coalesce(nullif(current_setting('cacheservice.clock_offset', true), '')::interval, interval '0') <> interval '0'`).Scan(&offset, &moved)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == pgerrcode.InvalidDatetimeFormat {
		return fmt.Errorf("%w to %q, which is not an interval: cache_now() fails", ErrClockOffset, offset)
	}
	if err != nil {
		return classify("check clock", err)
	}
	if moved {
		return fmt.Errorf("%w to %s on this database's sessions (connection string, ALTER DATABASE or ALTER ROLE): it moves the clock every lease is judged by; unset it", ErrClockOffset, offset)
	}
	return nil
}

// errStoreDeadline is the cause of a context ended by the store's own
// deadline, which tells it apart from the caller's.
var errStoreDeadline = fmt.Errorf("%w: the database did not answer within the store's deadline", ErrUnavailable)

// deadline bounds one database call so that a frozen database cannot hang a
// request, whatever deadline (if any) the caller brought. The context
// remembers which of the two comes first (see detach).
func (s *Store) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	bounded := &bounded{}
	if d, ok := ctx.Deadline(); ok {
		bounded.callerDeadline = d
	}
	var cancel context.CancelFunc
	bounded.Context, cancel = context.WithTimeoutCause(ctx, s.timeout, errStoreDeadline)
	return bounded, cancel
}

// classify turns a pgx error into one of the package's sentinels, wrapped
// with what was being done. Errors that are neither stay as they are (bugs).
func classify(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrTooLarge), errors.Is(err, ErrUnavailable):
		return err // classified already, deeper down
	case errors.Is(err, pgx.ErrNoRows):
		return ErrNotFound
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case isLockTimeout(err):
		return fmt.Errorf("%s: %w: %w", op, ErrLockTimeout, err)
	case isTooLarge(err):
		return fmt.Errorf("%s: %w: %w", op, ErrTooLarge, err)
	case isUnavailable(err):
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// isTooLarge reports whether PostgreSQL refused a value for its size, such
// as an index row over the btree limit.
func isTooLarge(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == pgerrcode.ProgramLimitExceeded
}

// isLockTimeout reports whether PostgreSQL gave up waiting for a lock
// (lock_timeout).
func isLockTimeout(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == pgerrcode.LockNotAvailable
}

// isUnavailable reports whether err means the database could not be reached
// or could not serve in time, as opposed to a fault in the request or code.
func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgerrcode.IsConnectionException(pgErr.Code),
			pgerrcode.IsInsufficientResources(pgErr.Code),
			pgerrcode.IsOperatorIntervention(pgErr.Code), // shutdown, statement cancelled
			pgErr.Code == pgerrcode.LockNotAvailable,
			pgErr.Code == pgerrcode.SerializationFailure,
			pgErr.Code == pgerrcode.DeadlockDetected,
			pgErr.Code == pgerrcode.ReadOnlySQLTransaction: // failover to a standby
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) ||
		errors.As(err, &connectErr) ||
		errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, puddle.ErrClosedPool)
}
