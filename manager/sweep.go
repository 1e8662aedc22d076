package manager

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
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

// SweepResult is what one pass deleted.
type SweepResult struct {
	Reservations int64
	Entries      int64
	// Incomplete is true when a table had more to delete than MaxBatches
	// allowed; the next pass goes on.
	Incomplete bool
	Took       time.Duration
}

// Sweep deletes, as of now, the reservations that expired more than
// cfg.ReservationRetention ago and, when cfg.EntryTTL is set, the entries
// last updated more than that ago. It stops at the first error and returns
// what it deleted until then. Any number of replicas may sweep at once: the
// store hands each batch to one sweeper only, and never deletes a row that a
// concurrent claim or Put has just refreshed.
func (m *Manager) Sweep(ctx context.Context, now time.Time, cfg SweepConfig) (res SweepResult, err error) {
	cfg = withSweepDefaults(cfg)
	started := time.Now()
	defer func() {
		res.Took = time.Since(started)
		m.observer.ObserveSweep(res, err)
	}()
	var more bool
	res.Reservations, more, err = sweepTable(ctx, cfg, m.store.DeleteExpiredReservations, now.Add(-cfg.ReservationRetention))
	res.Incomplete = more
	if err != nil {
		return res, fmt.Errorf("sweep reservations: %w", err)
	}
	if cfg.EntryTTL > 0 {
		res.Entries, more, err = sweepTable(ctx, cfg, m.store.DeleteEntriesUpdatedBefore, now.Add(-cfg.EntryTTL))
		res.Incomplete = res.Incomplete || more
		if err != nil {
			return res, fmt.Errorf("sweep entries: %w", err)
		}
	}
	return res, nil
}

// sweepTable deletes batches older than cutoff until one comes back short or
// cfg.MaxBatches ran; more reports that the limit stopped it.
func sweepTable(ctx context.Context, cfg SweepConfig, deleteBatch func(context.Context, time.Time, int) (int64, error), cutoff time.Time) (deleted int64, more bool, err error) {
	for range cfg.MaxBatches {
		n, err := deleteBatch(ctx, cutoff, cfg.BatchSize)
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

// RunSweeper sweeps every cfg.Interval, taking the time from now, until ctx
// ends. The first pass waits a random part of one interval so that replicas
// started together do not sweep in step. Errors are logged and the next pass
// tries again.
func (m *Manager) RunSweeper(ctx context.Context, cfg SweepConfig, now func() time.Time) {
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
		res, err := m.Sweep(ctx, now(), cfg)
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
