package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/store"
)

func TestLockReservationCreatesMissingRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	claim := store.Reservation{ID: store.ID{"o", "p", "d", "k"}, OwnerID: "w1", HeartbeatInterval: 500 * time.Millisecond, ExpiresAt: t0}
	var got store.Reservation
	var created bool
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		got, created, err = tx.LockReservation(ctx, claim)
		return err
	})
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	if !created || got != claim {
		t.Fatalf("lock = %+v created=%v, want the claim, created", got, created)
	}
	stored, err := b.store.GetReservation(b.ctx, claim.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if stored != claim {
		t.Fatalf("stored = %+v, want %+v (heartbeat kept to the nanosecond)", stored, claim)
	}

	// A second claim finds the row and does not replace it.
	other := claim
	other.OwnerID = "w2"
	err = b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		got, created, err = tx.LockReservation(ctx, other)
		return err
	})
	if err != nil || created || got != claim {
		t.Fatalf("second lock = %+v created=%v err=%v, want the first claim", got, created, err)
	}
}

func TestTxRollsBackWhenFnFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	claim := store.Reservation{ID: store.ID{"o", "p", "d", "k"}, OwnerID: "w1", HeartbeatInterval: time.Second, ExpiresAt: t0}
	boom := errors.New("boom")
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, _, err := tx.LockReservation(ctx, claim); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := b.store.GetReservation(b.ctx, claim.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reservation after rollback: %v, want ErrNotFound", err)
	}
}

// TestLockReservationHoldsRowLock proves the lock is real: a second
// transaction wanting the same row waits until the first commits, and then
// sees the first one's write.
func TestLockReservationHoldsRowLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	seed := store.Reservation{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, ExpiresAt: t0}
	mustLock(t, b, seed)

	locked := make(chan struct{})
	release := make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
			if _, _, err := tx.LockReservation(ctx, seed); err != nil {
				return err
			}
			close(locked)
			<-release
			next := seed
			next.OwnerID = "w-first"
			return tx.UpdateReservation(ctx, next)
		})
	}()
	<-locked

	secondDone := make(chan store.Reservation, 1)
	go func() {
		var got store.Reservation
		err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
			var err error
			got, _, err = tx.LockReservation(ctx, store.Reservation{ID: id, OwnerID: "w-second", ExpiresAt: t0})
			return err
		})
		if err != nil {
			t.Errorf("second lock: %v", err)
		}
		secondDone <- got
	}()

	waitForLockWaiter(t, b)
	select {
	case got := <-secondDone:
		t.Fatalf("second transaction got %+v while the first held the lock", got)
	default:
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	if got := <-secondDone; got.OwnerID != "w-first" {
		t.Fatalf("second transaction saw owner %q, want the first's committed write", got.OwnerID)
	}
}

func TestLockWaitPastDeadlineIsUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	seed := store.Reservation{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, ExpiresAt: t0}
	mustLock(t, b, seed)
	short, err := store.Open(b.ctx, store.Config{URL: b.url, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()

	locked, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
			if _, _, err := tx.LockReservation(ctx, seed); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	err = short.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		_, _, err := tx.LockReservation(ctx, seed)
		return err
	})
	close(release)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("holder: %v", err)
	}
}

func TestReleaseReservationOnlyByOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	mustLock(t, b, store.Reservation{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, ExpiresAt: t0})

	if released, err := b.store.ReleaseReservation(b.ctx, id, "w2"); err != nil || released {
		t.Fatalf("release by non-owner = %v, %v; want false, nil", released, err)
	}
	if _, err := b.store.GetReservation(b.ctx, id); err != nil {
		t.Fatalf("reservation gone after a non-owner's release: %v", err)
	}
	if released, err := b.store.ReleaseReservation(b.ctx, id, "w1"); err != nil || !released {
		t.Fatalf("release by owner = %v, %v; want true, nil", released, err)
	}
	if _, err := b.store.GetReservation(b.ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reservation after release: %v, want ErrNotFound", err)
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens there, so connecting is refused.
	st, err := store.Open(t.Context(), store.Config{URL: "postgres://u:secret@127.0.0.1:1/db?connect_timeout=2", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ops := map[string]error{
		"ping": st.Ping(t.Context()),
		"put":  st.PutEntry(t.Context(), store.Entry{ID: store.ID{"o", "p", "d", "k"}, URI: "u"}, store.Replace{}),
		"tx":   st.InTx(t.Context(), func(context.Context, *store.Tx) error { return nil }),
	}
	_, ops["get"] = st.GetEntry(t.Context(), store.ID{"o", "p", "d", "k"})
	for op, err := range ops {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: err = %v, want ErrUnavailable", op, err)
		}
	}
}

func mustLock(t *testing.T, b *testBundle, r store.Reservation) {
	t.Helper()
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		_, _, err := tx.LockReservation(ctx, r)
		return err
	})
	if err != nil {
		t.Fatalf("lock %+v: %v", r, err)
	}
}

// waitForLockWaiter polls pg_stat_activity until a backend of this database
// waits on a lock, bounded by 10s.
func waitForLockWaiter(t *testing.T, b *testBundle) {
	t.Helper()
	conn, err := pgx.Connect(b.ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var waiting int
		err := conn.QueryRow(b.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no transaction waited for the row lock within 10s")
}
