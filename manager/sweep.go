package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cacheservice/cacheservice/internal/setting"
)

// SweepConfig says what the sweeper removes and how much work one pass may do.
type SweepConfig struct {
	// Interval is the time between passes of RunSweeper; zero or less
	// disables it.
	Interval time.Duration
	// ReservationRetention is how long past its expiry a reservation is kept
	// before it is deleted. Nothing needs an expired reservation (a claim
	// treats it as absent), but keeping it a while shows who held a key
	// last. Zero deletes at the first pass after expiry.
	ReservationRetention time.Duration
	// EntryTTL, when positive, deletes entries whose last_updated_at is older
	// than it. Zero keeps entries until they are deleted by a client.
	EntryTTL time.Duration
	// BatchSize is the most rows one statement deletes; each batch holds its
	// row locks only while it runs. Default 1000.
	BatchSize int
	// MaxBatches bounds one pass per table, so a large backlog is cleared
	// over several passes instead of one long one. Default 100.
	MaxBatches int
}

// DefaultSweepConfig returns the sweeper's defaults.
func DefaultSweepConfig() SweepConfig {
	return SweepConfig{
		Interval:             time.Minute,
		ReservationRetention: time.Hour,
		BatchSize:            1000,
		MaxBatches:           100,
	}
}

// Bounds of the sweeper's settings.
const (
	MinSweepInterval, MaxSweepInterval = 10 * time.Millisecond, 24 * time.Hour
	MaxRetention                       = 100 * 365 * 24 * time.Hour
	MaxSweepBatchSize                  = 100_000
)

// Validate checks the sweeper's bounds. Errors are *setting.Errors
// naming the Config field; the caller names it as its users know it.
func (c SweepConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &setting.Error{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if c.Interval != 0 && (c.Interval < MinSweepInterval || c.Interval > MaxSweepInterval) {
		bad("Interval", "must be 0 (off) or between %v and %v, got %v", MinSweepInterval, MaxSweepInterval, c.Interval)
	}
	if c.ReservationRetention < 0 || c.ReservationRetention > MaxRetention {
		bad("ReservationRetention", "must be between 0 and %v, got %v", MaxRetention, c.ReservationRetention)
	}
	if c.EntryTTL < 0 || c.EntryTTL > MaxRetention {
		bad("EntryTTL", "must be between 0 (keep) and %v, got %v", MaxRetention, c.EntryTTL)
	}
	if c.BatchSize < 1 || c.BatchSize > MaxSweepBatchSize {
		bad("BatchSize", "must be between 1 and %d, got %d", MaxSweepBatchSize, c.BatchSize)
	}
	return errors.Join(errs...)
}

// SweepResult is what one pass deleted.
type SweepResult struct {
	Reservations int64
	Entries      int64
	// Incomplete is true when a table had more to delete than MaxBatches
	// allowed; the next pass goes on.
	Incomplete bool
	Took       time.Duration
}

// Sweep deletes the reservations that expired more than
// cfg.ReservationRetention ago and, when cfg.EntryTTL is set, the entries
// last updated more than that ago, by the database's clock (so a replica
// whose own clock runs fast cannot delete a live lease). It stops at the first error and returns
// what it deleted until then. Any number of replicas may sweep at once: the
// store hands each batch to one sweeper only, and never deletes a row that a
// concurrent claim or Put has just refreshed.
func (m *Manager) Sweep(ctx context.Context, cfg SweepConfig) (res SweepResult, err error) {
	cfg = withSweepDefaults(cfg)
	started := time.Now()
	defer func() {
		res.Took = time.Since(started)
		m.observer.ObserveSweep(res, err)
	}()
	var more bool
	res.Reservations, more, err = sweepTable(ctx, cfg, m.store.DeleteExpiredReservations, cfg.ReservationRetention)
	res.Incomplete = more
	if err != nil {
		return res, fmt.Errorf("sweep reservations: %w", err)
	}
	if cfg.EntryTTL > 0 {
		res.Entries, more, err = sweepTable(ctx, cfg, m.store.DeleteEntriesOlderThan, cfg.EntryTTL)
		res.Incomplete = res.Incomplete || more
		if err != nil {
			return res, fmt.Errorf("sweep entries: %w", err)
		}
	}
	return res, nil
}

// sweepTable deletes batches of rows older than age until one comes back
// short or cfg.MaxBatches ran; more reports that the limit stopped it.
func sweepTable(ctx context.Context, cfg SweepConfig, deleteBatch func(context.Context, time.Duration, int) (int64, error), age time.Duration) (deleted int64, more bool, err error) {
	for range cfg.MaxBatches {
		n, err := deleteBatch(ctx, age, cfg.BatchSize)
		deleted += n
		if err != nil || n < int64(cfg.BatchSize) {
			return deleted, false, err
		}
	}
	return deleted, true, nil
}

func withSweepDefaults(cfg SweepConfig) SweepConfig {
	def := DefaultSweepConfig()
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = def.BatchSize
	}
	if cfg.MaxBatches <= 0 {
		cfg.MaxBatches = def.MaxBatches
	}
	cfg.ReservationRetention = max(cfg.ReservationRetention, 0)
	return cfg
}

// RunSweeper sweeps every cfg.Interval until ctx ends. The first pass waits a random part of one interval so that replicas
// started together do not sweep in step. Errors are logged and the next pass
// tries again.
func (m *Manager) RunSweeper(ctx context.Context, cfg SweepConfig) {
	if cfg.Interval <= 0 {
		return
	}
	wait := time.Duration(rand.Int64N(int64(cfg.Interval)))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res, err := m.Sweep(ctx, cfg)
		switch {
		case err != nil && ctx.Err() != nil:
			return // shutting down
		case err != nil:
			m.logger.WarnContext(ctx, "sweep failed", "err", err,
				"reservations_deleted", res.Reservations, "entries_deleted", res.Entries)
		case res.Reservations > 0 || res.Entries > 0:
			m.logger.InfoContext(ctx, "swept",
				"reservations_deleted", res.Reservations, "entries_deleted", res.Entries,
				"incomplete", res.Incomplete, "took", res.Took)
		default:
			m.logger.DebugContext(ctx, "swept nothing", "took", res.Took)
		}
		timer.Reset(cfg.Interval)
	}
}
