package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

// seedReservation creates a reservation of key that expires at expiresAt.
func (b *testBundle) seedReservation(t *testing.T, key string, expiresAt time.Time) store.ID {
	t.Helper()
	id := store.ID{"o", "p", "d", key}
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		_, created, err := tx.LockReservation(ctx, store.Reservation{ID: id, OwnerID: "w", HeartbeatInterval: time.Second, ExpiresAt: expiresAt})
		if err == nil && !created {
			err = fmt.Errorf("reservation %s existed already", key)
		}
		return err
	})
	if err != nil {
		t.Fatalf("seed reservation %s: %v", key, err)
	}
	return id
}

// seedEntry creates an entry of key last updated at updatedAt.
func (b *testBundle) seedEntry(t *testing.T, key string, updatedAt time.Time) store.ID {
	t.Helper()
	id := store.ID{"o", "p", "d", key}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "s3://b/" + key, CreatedAt: updatedAt, LastUpdatedAt: updatedAt}, store.Replace{}); err != nil {
		t.Fatalf("seed entry %s: %v", key, err)
	}
	return id
}

// sweepKind is one of the two tables the sweeper cleans, seen through the
// store's API.
type sweepKind struct {
	seed   func(b *testBundle, t *testing.T, key string, at time.Time) store.ID
	delete func(b *testBundle, cutoff time.Time, limit int) (int64, error)
	get    func(b *testBundle, id store.ID) error
}

var sweepKinds = map[string]sweepKind{
	"reservations": {
		seed: (*testBundle).seedReservation,
		delete: func(b *testBundle, cutoff time.Time, limit int) (int64, error) {
			return b.store.DeleteExpiredReservations(b.ctx, cutoff, limit)
		},
		get: func(b *testBundle, id store.ID) error { _, err := b.store.GetReservation(b.ctx, id); return err },
	},
	"entries": {
		seed: (*testBundle).seedEntry,
		delete: func(b *testBundle, cutoff time.Time, limit int) (int64, error) {
			return b.store.DeleteEntriesUpdatedBefore(b.ctx, cutoff, limit)
		},
		get: func(b *testBundle, id store.ID) error { _, err := b.store.GetEntry(b.ctx, id); return err },
	},
}

func TestSweepDeletesOnlyRowsBeforeCutoff(t *testing.T) {
	t.Parallel()
	for name, kind := range sweepKinds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			before := kind.seed(b, t, "before", t0.Add(-time.Microsecond))
			at := kind.seed(b, t, "at", t0)
			after := kind.seed(b, t, "after", t0.Add(time.Microsecond))

			n, err := kind.delete(b, t0, 100)
			if err != nil || n != 1 {
				t.Fatalf("delete = %d, %v; want 1 deleted", n, err)
			}
			if err := kind.get(b, before); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("row before the cutoff: err = %v, want ErrNotFound", err)
			}
			for _, id := range []store.ID{at, after} {
				if err := kind.get(b, id); err != nil {
					t.Errorf("row %s (not before the cutoff) is gone: %v", id.Key, err)
				}
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
				kind.seed(b, t, fmt.Sprint("k", i), t0.Add(-time.Hour))
			}
			var got []int64
			for range 4 {
				n, err := kind.delete(b, t0, 3)
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
	locked := b.seedReservation(t, "locked", t0.Add(-time.Hour))
	free := b.seedReservation(t, "free", t0.Add(-time.Hour))

	var n int64
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, _, err := tx.LockReservation(ctx, store.Reservation{ID: locked, OwnerID: "w2", HeartbeatInterval: time.Second, ExpiresAt: t0}); err != nil {
			return err
		}
		// Another connection sweeps while this transaction holds the lock; a
		// sweeper that waited would deadlock here until the store's deadline.
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var err error
		n, err = b.store.DeleteExpiredReservations(short, t0, 100)
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
