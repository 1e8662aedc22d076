// Package manager is the policy of the cache: timestamps, the overwrite and
// max-age rules, heartbeat resolution, who may claim a reservation, and which
// error code a caller sees. It speaks the API's messages and connect's error
// codes but knows no HTTP and no SQL; the store does the persistence, and
// the caller passes the clock in so that tests can drive time.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/store"
)

// Config holds the server-side limits that depend on flags.
type Config struct {
	// MaxHeartbeat is the longest heartbeat interval granted, and the one
	// given when a caller asks for none.
	MaxHeartbeat time.Duration
	// GraceMultiplier is how many heartbeat intervals a reservation lives
	// without being extended.
	GraceMultiplier float64
	// MaxInlineBytes bounds an inline output.
	MaxInlineBytes int
}

// DefaultConfig returns the default limits (docs/ARCHITECTURE.md, "Limits").
func DefaultConfig() Config {
	return Config{
		MaxHeartbeat:    10 * time.Second,
		GraceMultiplier: 3,
		MaxInlineBytes:  1 << 20,
	}
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

// dbTime is t as PostgreSQL keeps it (UTC, microseconds), so that what a
// response says is what a later read returns.
func dbTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// invalidArgument reports a bad field by name.
func invalidArgument(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// toConnectError maps a store error to the code of the table in
// docs/ARCHITECTURE.md ("Errors") with a message safe for clients. Detail
// that could leak SQL or connection strings goes to the log only.
func (m *Manager) toConnectError(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New("entry not found"))
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAlreadyExists,
			errors.New("entry already exists; set overwrite, or max_age to replace an old one"))
	case errors.Is(err, store.ErrTooLarge):
		// Only the identity is unbounded in bytes: its limits are in characters.
		return invalidArgument("key", "scope and key together are too large to index; use a shorter key")
	case ctx.Err() != nil:
		// The caller gave up or ran out of its own time; not the database's fault.
		code := connect.CodeCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded
		}
		return connect.NewError(code, errors.New("request ended before the database answered"))
	case errors.Is(err, store.ErrUnavailable):
		m.logger.WarnContext(ctx, "database unavailable", "op", op, "err", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("database unavailable; retry later"))
	default:
		m.logger.ErrorContext(ctx, "internal error", "op", op, "err", err)
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
}
