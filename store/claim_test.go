package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

// TestStoreClaimReservationDecides walks Store.ClaimReservation through
// every outcome: create, held by another, extend, and takeover once the
// database's clock passes the lease.
func TestStoreClaimReservationDecides(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	claim := func(owner string) store.ClaimResult {
		t.Helper()
		res, err := b.store.ClaimReservation(b.ctx, store.Claim{ID: id, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute})
		if err != nil {
			t.Fatalf("claim by %s: %v", owner, err)
		}
		return res
	}
	first := claim("w1")
	if !first.Created || !first.Granted || first.Current.OwnerID != "w1" || first.Previous != first.Current {
		t.Fatalf("first claim = %+v, want w1's, created and granted", first)
	}
	if held := claim("w2"); held.Created || held.Granted || held.Current != first.Current || held.Previous != first.Current {
		t.Fatalf("w2's claim = %+v, want w1's reservation untouched", held)
	}
	ext := claim("w1")
	if ext.Created || !ext.Granted || ext.Previous != first.Current || !ext.Current.ExpiresAt.After(first.Current.ExpiresAt) {
		t.Fatalf("w1's second claim = %+v, want an extension of %+v", ext, first.Current)
	}
	b.clock.Shift(t, time.Hour)
	took := claim("w2")
	if took.Created || !took.Granted || took.Previous.OwnerID != "w1" || took.Current.OwnerID != "w2" || !took.Current.ExpiresAt.After(b.clock.Now(t)) {
		t.Fatalf("w2's claim after expiry = %+v, want a live takeover from w1", took)
	}
	stored, err := b.store.GetReservation(b.ctx, id)
	if err != nil || stored != took.Current {
		t.Fatalf("stored %+v (%v), want %+v", stored, err, took.Current)
	}
}

// TestStoreClaimAnswersAnotherHolderWithoutTheLock locks the reservation
// row from another session: a claimant that is not the holder is still
// answered at once (it never queues on the lock), while the holder's own
// claim, which needs the lock, waits for it.
func TestStoreClaimAnswersAnotherHolderWithoutTheLock(t *testing.T) {
	t.Parallel()
	b := setup(t) // lock timeout 5s
	id := store.ID{"o", "p", "d", "k"}
	c := store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute}
	held, err := b.store.ClaimReservation(b.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := b.store.Pool().Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // ends the outside lock
	if _, err := tx.Exec(b.ctx, "SELECT 1 FROM reservations WHERE key = 'k' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	// Well below the lock timeout: a claim that queued would fail here.
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	other := c
	other.OwnerID = "w2"
	res, err := b.store.ClaimReservation(ctx, other)
	if err != nil || res.Granted || res.Current != held.Current {
		t.Fatalf("w2's claim under the outside lock = %+v, %v; want w1's reservation, answered without waiting", res, err)
	}

	ctx, cancel = context.WithTimeout(b.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := b.store.ClaimReservation(ctx, c); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("w1's claim under the outside lock: err = %v, want it to wait for the lock and time out", err)
	}
}
