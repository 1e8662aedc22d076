// Package manager is the policy of the cache: timestamps, the overwrite and
// max-age rules, heartbeat resolution, who may claim a reservation, and which
// error code a caller sees. It speaks the API's messages and connect's error
// codes but knows no HTTP and no SQL; the store does the persistence.
//
// Time that decides anything is the database's clock, read by the store
// (docs/ARCHITECTURE.md, "The clock"): the manager passes durations, never instants, so
// replicas agree and tests move time by moving that clock. Go's own clock is
// for deadlines and metrics only.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/setting"
	"github.com/cacheservice/cacheservice/store"
)

// Config holds the server-side limits that depend on flags.
type Config struct {
	// MaxHeartbeat is the longest heartbeat interval granted, and the one
	// given when a caller asks for none.
	MaxHeartbeat time.Duration
	// MinHeartbeat is the shortest heartbeat interval a caller may ask for;
	// shorter ones are invalid_argument, as a lease that short would expire
	// before the worker could extend it.
	MinHeartbeat time.Duration
	// GraceMultiplier is how many heartbeat intervals a reservation lives
	// without being extended.
	GraceMultiplier float64
	// MaxInlineBytes bounds an inline output.
	MaxInlineBytes int
}

// Bounds of the settings. With these, heartbeat × grace is at most 100
// days, far from overflowing; the lease arithmetic saturates anyway.
const (
	MinHeartbeatFloor  = time.Millisecond
	MaxHeartbeatCeil   = 24 * time.Hour
	MinGraceMultiplier = 1
	MaxGraceMultiplier = 100
)

// DefaultConfig returns the default limits (docs/ARCHITECTURE.md, "Limits").
func DefaultConfig() Config {
	return Config{
		MaxHeartbeat:    10 * time.Second,
		MinHeartbeat:    100 * time.Millisecond,
		GraceMultiplier: 3,
		MaxInlineBytes:  1 << 20,
	}
}

// Validate checks the settings' bounds. Errors are *setting.Errors
// naming the Config field; the caller names it as its users know it.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &setting.Error{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if c.MaxHeartbeat < MinHeartbeatFloor || c.MaxHeartbeat > MaxHeartbeatCeil {
		bad("MaxHeartbeat", "must be between %v and %v, got %v", MinHeartbeatFloor, MaxHeartbeatCeil, c.MaxHeartbeat)
	}
	if c.MinHeartbeat < MinHeartbeatFloor || c.MinHeartbeat > c.MaxHeartbeat {
		bad("MinHeartbeat", "must be at least %v and at most {MaxHeartbeat} (%v), got %v", MinHeartbeatFloor, c.MaxHeartbeat, c.MinHeartbeat)
	}
	// Written so that NaN fails too.
	if !(c.GraceMultiplier >= MinGraceMultiplier && c.GraceMultiplier <= MaxGraceMultiplier) {
		bad("GraceMultiplier", "must be between %d and %d, got %v", MinGraceMultiplier, MaxGraceMultiplier, c.GraceMultiplier)
	}
	if c.MaxInlineBytes <= 0 {
		bad("MaxInlineBytes", "must be positive, got %d", c.MaxInlineBytes)
	}
	return errors.Join(errs...)
}

// Manager applies the cache's rules on top of a store.
type Manager struct {
	store    *store.Store
	cfg      Config
	logger   *slog.Logger
	observer Observer
}

// New returns a Manager over st. Zero fields of cfg take their defaults.
func New(st *store.Store, cfg Config, logger *slog.Logger, opts ...Option) *Manager {
	def := DefaultConfig()
	if cfg.MaxHeartbeat <= 0 {
		cfg.MaxHeartbeat = def.MaxHeartbeat
	}
	if cfg.MinHeartbeat <= 0 {
		cfg.MinHeartbeat = min(def.MinHeartbeat, cfg.MaxHeartbeat)
	}
	if cfg.GraceMultiplier <= 0 {
		cfg.GraceMultiplier = def.GraceMultiplier
	}
	if cfg.MaxInlineBytes <= 0 {
		cfg.MaxInlineBytes = def.MaxInlineBytes
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{store: st, cfg: cfg, logger: logger, observer: nopObserver{}}
	for _, opt := range opts {
		opt(m)
	}
	return m
}

// idOf builds the store identity; the scope's parts stay separate.
func idOf(scope *cachev1.Scope, key string) store.ID {
	return store.ID{Org: scope.GetOrg(), Project: scope.GetProject(), Domain: scope.GetDomain(), Key: key}
}

// invalidArgument reports a bad field by name.
func invalidArgument(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// toConnectError maps a store error to the code of the table in
// docs/ARCHITECTURE.md ("Errors") with a message safe for clients. Detail
// that could leak SQL or connection strings goes to the log only.
func (m *Manager) toConnectError(ctx context.Context, op string, err error) error {
	code, message := errorOf(ctx, err)
	switch {
	case code == connect.CodeInternal:
		m.logger.ErrorContext(ctx, "internal error", "op", op, "err", err)
	case code == connect.CodeUnavailable && errors.Is(err, store.ErrLockTimeout):
		// Another session holds the row: expected under contention or when
		// something outside locks it; counted, not logged as trouble.
		m.logger.DebugContext(ctx, "lock wait timed out", "op", op, "err", err)
	case code == connect.CodeUnavailable:
		m.logger.WarnContext(ctx, "database unavailable", "op", op, "err", err)
	}
	return connect.NewError(code, errors.New(message))
}

// ErrorCode is the code a caller of the service sees for err, an error of
// the store's, in a call whose context is ctx. The benchmark's raw-pgx
// ceiling, which calls the store directly, counts its errors by it.
func ErrorCode(ctx context.Context, err error) connect.Code {
	code, _ := errorOf(ctx, err)
	return code
}

// errorOf maps a store error to the code of the error table
// (docs/ARCHITECTURE.md) and a message safe for clients: detail that could
// leak SQL or connection strings stays in err, for the log.
func errorOf(ctx context.Context, err error) (connect.Code, string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.CodeNotFound, "entry not found"
	case errors.Is(err, store.ErrConflict):
		return connect.CodeAlreadyExists, "entry already exists; set overwrite, or max_age to replace an old one"
	case errors.Is(err, store.ErrTooLarge):
		// Only the identity is unbounded in bytes: its limits are in characters.
		return connect.CodeInvalidArgument, "key: scope and key together are too large to index; use a shorter key"
	case ctx.Err() != nil:
		// The caller gave up or ran out of its own time; not the database's fault.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return connect.CodeDeadlineExceeded, "request ended before the database answered"
		}
		return connect.CodeCanceled, "request ended before the database answered"
	case errors.Is(err, store.ErrLockTimeout):
		return connect.CodeUnavailable, "the key is busy: another request holds it; retry later"
	case errors.Is(err, store.ErrUnavailable):
		return connect.CodeUnavailable, "database unavailable; retry later"
	default:
		return connect.CodeInternal, "internal error"
	}
}
