package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

// seedReservation creates a reservation of key that expires at the
// database's clock plus in (negative: in the past).
func (b *testBundle) seedReservation(t *testing.T, key string, in time.Duration) store.ID {
	t.Helper()
	id := store.ID{"o", "p", "d", key}
	if res := b.claim(t, store.Claim{ID: id, OwnerID: "w", HeartbeatInterval: time.Second, Lease: in}); !res.Created {
		t.Fatalf("seed reservation %s: it existed already", key)
	}
	return id
}

// seedEntry creates an entry of key last updated at the database's clock
// plus in (negative: in the past), straight into the table.
func (b *testBundle) seedEntry(t *testing.T, key string, in time.Duration) store.ID {
	t.Helper()
	id := store.ID{"o", "p", "d", key}
	_, err := b.store.Pool().Exec(b.ctx, `
		INSERT INTO cache_entries (org, project, domain, key, output_uri, created_at, last_updated_at)
		VALUES ($1, $2, $3, $4, 'seeded', cache_now() + $5::interval, cache_now() + $5::interval)`,
		id.Org, id.Project, id.Domain, id.Key, in)
	if err != nil {
		t.Fatalf("seed entry %s: %v", key, err)
	}
	return id
}

// sweepKind is one of the two tables the sweeper cleans, seen through the
// store's API.
type sweepKind struct {
	seed   func(b *testBundle, t *testing.T, key string, in time.Duration) store.ID
	delete func(b *testBundle, age time.Duration, limit int) (int64, error)
	get    func(b *testBundle, id store.ID) error
}

var sweepKinds = map[string]sweepKind{
	"reservations": {
		seed: (*testBundle).seedReservation,
		delete: func(b *testBundle, age time.Duration, limit int) (int64, error) {
			return b.store.DeleteExpiredReservations(b.ctx, age, limit)
		},
		get: func(b *testBundle, id store.ID) error { _, err := b.store.GetReservation(b.ctx, id); return err },
	},
	"entries": {
		seed: (*testBundle).seedEntry,
		delete: func(b *testBundle, age time.Duration, limit int) (int64, error) {
			return b.store.DeleteEntriesOlderThan(b.ctx, age, limit)
		},
		get: func(b *testBundle, id store.ID) error { _, err := b.store.GetEntry(b.ctx, id); return err },
	},
}

// TestSweepDeletesOnlyRowsBeforeCutoff seeds rows around the cutoff (an hour
// before the database's clock), then moves that clock a day back and forth:
// the cutoff follows it.
func TestSweepDeletesOnlyRowsBeforeCutoff(t *testing.T) {
	t.Parallel()
	// The rows sit this far either side of the cutoff. The clock is turned
	// back by however long seeding took before the sweep, so only the
	// moments between that turn and the sweep's statement eat into the
	// margin: on a loaded machine those can be seconds, never half a minute.
	const margin = 30 * time.Second
	for name, kind := range sweepKinds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			seeded := time.Now()
			before := kind.seed(b, t, "before", -time.Hour-margin)
			after := kind.seed(b, t, "after", -time.Hour+margin)
			live := kind.seed(b, t, "live", time.Hour)

			b.clock.Shift(t, -24*time.Hour) // nothing is old a day earlier
			if n, err := kind.delete(b, time.Hour, 100); err != nil || n != 0 {
				t.Fatalf("delete a day earlier = %d, %v; want none deleted", n, err)
			}
			// Back to the moment of seeding.
			b.clock.Shift(t, -time.Since(seeded))
			n, err := kind.delete(b, time.Hour, 100)
			if err != nil || n != 1 {
				t.Fatalf("delete = %d, %v; want 1 deleted", n, err)
			}
			if err := kind.get(b, before); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("row before the cutoff: err = %v, want ErrNotFound", err)
			}
			for _, id := range []store.ID{after, live} {
				if err := kind.get(b, id); err != nil {
					t.Errorf("row %s (not before the cutoff) is gone: %v", id.Key, err)
				}
			}
			b.clock.Shift(t, 3*time.Hour) // now everything is
			if n, err := kind.delete(b, time.Hour, 100); err != nil || n != 2 {
				t.Fatalf("delete 3h later = %d, %v; want the other 2 deleted", n, err)
			}
		})
	}
}

func TestSweepDeletesInBoundedBatches(t *testing.T) {
	t.Parallel()
	for name, kind := range sweepKinds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			for i := range 7 {
				kind.seed(b, t, fmt.Sprint("k", i), -2*time.Hour)
			}
			var got []int64
			for range 4 {
				n, err := kind.delete(b, time.Hour, 3)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if fmt.Sprint(got) != "[3 3 1 0]" {
				t.Errorf("batches deleted %v, want [3 3 1 0]", got)
			}
		})
	}
}

// A sweeper must neither wait for nor delete a reservation that a claim has
// locked: the claim may be about to extend it.
func TestDeleteExpiredReservationsSkipsRowsLockedByAClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	locked := b.seedReservation(t, "locked", -time.Hour)
	free := b.seedReservation(t, "free", -time.Hour)

	var n int64
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, err := tx.ClaimReservation(ctx, store.Claim{ID: locked, OwnerID: "w2", HeartbeatInterval: time.Second, Lease: time.Minute}); err != nil {
			return err
		}
		// Another connection sweeps while this transaction holds the lock; a
		// sweeper that waited would deadlock here until the store's deadline.
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var err error
		n, err = b.store.DeleteExpiredReservations(short, 0, 100)
		return err
	})
	if err != nil {
		t.Fatalf("sweep inside a claim: %v", err)
	}
	if n != 1 {
		t.Fatalf("deleted %d, want only the unlocked one", n)
	}
	if _, err := b.store.GetReservation(b.ctx, free); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unlocked expired reservation: err = %v, want ErrNotFound", err)
	}
	if _, err := b.store.GetReservation(b.ctx, locked); err != nil {
		t.Errorf("locked reservation is gone: %v", err)
	}
}

func TestMigrationIndexesSweepColumns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, index := range []string{"reservations_expires_at_idx", "cache_entries_last_updated_at_idx"} {
		var exists bool
		if err := b.store.Pool().QueryRow(b.ctx, "SELECT to_regclass($1) IS NOT NULL", index).Scan(&exists); err != nil || !exists {
			t.Errorf("index %s: exists=%v err=%v", index, exists, err)
		}
	}
}
