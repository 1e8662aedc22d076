package store

import (
	"testing"
	"time"
)

// TestGiveBackSparesALeaseTheSameOwnerExtended replays the interleaving of a
// claim whose caller left after its grant committed, while the same owner's
// retry extended the lease: the first claim's give-back arrives after the
// extension. It must delete only the lease it granted, so the retry keeps
// the key and a third claimant is told it is held, never given it too.
func TestGiveBackSparesALeaseTheSameOwnerExtended(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openStore(t, Config{MaxConns: 2, Timeout: 30 * time.Second})
	owner := Claim{ID: ID{"o", "p", "d", "k"}, OwnerID: "owner", HeartbeatInterval: time.Second, Lease: time.Minute}

	first, err := s.ClaimReservation(ctx, owner) // the grant whose caller left
	if err != nil || !first.Created {
		t.Fatalf("first claim: %+v, %v; want it created", first, err)
	}
	retry, err := s.ClaimReservation(ctx, owner) // the same owner's retry extends it
	if err != nil || !retry.Granted || !retry.Current.ExpiresAt.After(first.Current.ExpiresAt) {
		t.Fatalf("retry: %+v, %v; want the lease extended past %v", retry, err, first.Current.ExpiresAt)
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	giveBack(ctx, conn, owner, first.Current.ExpiresAt) // the first claim's late give-back
	conn.Release()

	held, err := s.GetReservation(ctx, owner.ID)
	if err != nil || held.OwnerID != "owner" || !held.ExpiresAt.Equal(retry.Current.ExpiresAt) {
		t.Fatalf("after the stale give-back: %+v, %v; want the retry's lease kept", held, err)
	}
	other, err := s.ClaimReservation(ctx, Claim{ID: owner.ID, OwnerID: "other", HeartbeatInterval: time.Second, Lease: time.Minute})
	if err != nil || other.Granted || other.Current.OwnerID != "owner" {
		t.Fatalf("third claimant: %+v, %v; want it told the key is held by owner", other, err)
	}

	// The give-back of the lease the claim did grant still frees the key.
	conn, err = s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	giveBack(ctx, conn, owner, retry.Current.ExpiresAt)
	conn.Release()
	if _, err := s.GetReservation(ctx, owner.ID); err != ErrNotFound {
		t.Fatalf("after giving back its own lease: %v, want ErrNotFound", err)
	}
}
