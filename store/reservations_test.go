package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

// claim runs ClaimReservation in a transaction of its own.
func (b *testBundle) claim(t *testing.T, c store.Claim) store.ClaimResult {
	t.Helper()
	res, err := claimWith(b.ctx, b.store, c)
	if err != nil {
		t.Fatalf("claim %+v: %v", c, err)
	}
	return res
}

func claimWith(ctx context.Context, st *store.Store, c store.Claim) (res store.ClaimResult, err error) {
	err = st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		res, err = tx.ClaimReservation(ctx, c)
		return err
	})
	return res, err
}

func TestClaimReservationCreatesMissingRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.clock.Shift(t, -1000*time.Hour) // the lease runs on the database's clock, not ours
	c := store.Claim{ID: store.ID{"o", "p", "d", "k"}, OwnerID: "w1", HeartbeatInterval: 500*time.Millisecond + time.Nanosecond, Lease: 90 * time.Second}
	before := b.clock.Now(t)
	got := b.claim(t, c)
	after := b.clock.Now(t)
	if !got.Created || !got.Granted || got.Current.OwnerID != "w1" || got.Current.HeartbeatInterval != c.HeartbeatInterval {
		t.Fatalf("claim = %+v, want w1's, created and granted, heartbeat kept to the nanosecond", got)
	}
	if exp := got.Current.ExpiresAt; exp.Before(before.Add(c.Lease).Truncate(time.Microsecond)) || exp.After(after.Add(c.Lease)) {
		t.Fatalf("expires_at = %v, want the lease after the clock's %v..%v", exp, before, after)
	}
	stored, err := b.store.GetReservation(b.ctx, c.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if stored != got.Current {
		t.Fatalf("stored = %+v, want %+v", stored, got.Current)
	}

	// A second claimant finds the row and does not replace it.
	other := c
	other.OwnerID = "w2"
	if again := b.claim(t, other); again.Created || again.Granted || again.Current != stored || again.Previous != stored {
		t.Fatalf("second claim = %+v, want the first claim's reservation untouched", again)
	}
}

// TestClaimReservationGrantsByTheDatabaseClock moves the database's clock
// around a holder's expiry: another owner gets the reservation only once it
// has expired by that clock, and the holder may always extend it.
func TestClaimReservationGrantsByTheDatabaseClock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	b.claim(t, store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Hour})
	steps := []struct {
		offset  time.Duration
		owner   string
		granted bool
	}{
		{59 * time.Minute, "w2", false}, // a minute before expiry
		{59 * time.Minute, "w1", true},  // the holder extends: now expires at +1h59m
		{time.Hour + 58*time.Minute, "w2", false},
		{2 * time.Hour, "w2", true}, // past expiry: taken over
		{2 * time.Hour, "w1", false},
	}
	for i, s := range steps {
		b.clock.Shift(t, s.offset)
		res := b.claim(t, store.Claim{ID: id, OwnerID: s.owner, HeartbeatInterval: time.Second, Lease: time.Hour})
		if res.Granted != s.granted {
			t.Fatalf("step %d (%s at +%v): granted = %v, want %v (%+v)", i, s.owner, s.offset, res.Granted, s.granted, res)
		}
		if now := b.clock.Now(t); res.Granted && !res.Current.ExpiresAt.After(now.Add(59*time.Minute)) {
			t.Fatalf("step %d: granted until %v, want an hour after %v", i, res.Current.ExpiresAt, now)
		}
	}
}

func TestTxRollsBackWhenFnFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := store.Claim{ID: store.ID{"o", "p", "d", "k"}, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute}
	boom := errors.New("boom")
	err := b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, err := tx.ClaimReservation(ctx, c); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := b.store.GetReservation(b.ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reservation after rollback: %v, want ErrNotFound", err)
	}
}

// TestClaimReservationHoldsRowLock proves the lock is real: a second
// transaction wanting the same row waits until the first commits, and then
// sees the first one's write.
func TestClaimReservationHoldsRowLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	b.claim(t, store.Claim{ID: id, OwnerID: "w0", HeartbeatInterval: time.Second, Lease: -time.Hour}) // expired

	locked := make(chan struct{})
	release := make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
			if _, err := tx.ClaimReservation(ctx, store.Claim{ID: id, OwnerID: "w-first", HeartbeatInterval: time.Second, Lease: time.Hour}); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked

	secondDone := make(chan store.ClaimResult, 1)
	go func() {
		res, err := claimWith(b.ctx, b.store, store.Claim{ID: id, OwnerID: "w-second", HeartbeatInterval: time.Second, Lease: time.Hour})
		if err != nil {
			t.Errorf("second claim: %v", err)
		}
		secondDone <- res
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
	if got := <-secondDone; got.Granted || got.Previous.OwnerID != "w-first" {
		t.Fatalf("second transaction got %+v, want the first's committed reservation, not granted", got)
	}
}

// lockFromOutside locks the reservation row of id from a session of its own,
// as another program or a stuck transaction would, until the returned
// function is called.
func lockFromOutside(t *testing.T, b *testBundle, id store.ID) (unlock func()) {
	t.Helper()
	conn, err := pgx.Connect(b.ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := tx.QueryRow(b.ctx, `SELECT owner_id FROM reservations WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4 FOR UPDATE`,
		id.Org, id.Project, id.Domain, id.Key).Scan(&owner); err != nil {
		t.Fatalf("lock from outside: %v", err)
	}
	done := false
	unlock = func() {
		if !done {
			done = true
			_ = tx.Rollback(context.Background())
			_ = conn.Close(context.Background())
		}
	}
	t.Cleanup(unlock)
	return unlock
}

func TestLockWaitPastDeadlineIsUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	b.claim(t, store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute})
	short, err := store.Open(b.ctx, store.Config{URL: b.url, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	lockFromOutside(t, b, id)
	_, err = claimWith(b.ctx, short, store.Claim{ID: id, OwnerID: "w2", HeartbeatInterval: time.Second, Lease: time.Minute})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// TestLockWaitPastLockTimeoutIsErrLockTimeout holds a reservation row from
// outside: a claim gives up after the lock timeout, long before the store's
// deadline, with ErrLockTimeout (which is also ErrUnavailable).
func TestLockWaitPastLockTimeoutIsErrLockTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	b.claim(t, store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute})
	st, err := store.Open(b.ctx, store.Config{URL: b.url, Timeout: time.Minute, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	unlock := lockFromOutside(t, b, id)
	for _, owner := range []string{"w1", "w2"} {
		_, err = claimWith(b.ctx, st, store.Claim{ID: id, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute})
		if !errors.Is(err, store.ErrLockTimeout) || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("claim by %s: err = %v, want ErrLockTimeout", owner, err)
		}
	}
	// The pool's connection is healthy after it: once the lock is gone, the
	// same store claims.
	unlock()
	if res, err := claimWith(b.ctx, st, store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute}); err != nil || !res.Granted {
		t.Fatalf("claim after unlock = %+v, %v; want granted", res, err)
	}
}

// TestHeartbeatPastLockTimeoutIsErrLockTimeout holds the holder's live
// reservation row from outside: the holder's heartbeat through
// Store.ClaimReservation, which extends the lease in a statement of its
// own, gives up after the lock timeout too, while another claimant is still
// answered without waiting.
func TestHeartbeatPastLockTimeoutIsErrLockTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	c := store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute}
	b.claim(t, c)
	// One connection: the lock timeout set for the heartbeat's statement
	// must not stay with the connection for what runs on it next.
	st, err := store.Open(b.ctx, store.Config{URL: b.url, MaxConns: 1, Timeout: time.Minute, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	showLockTimeout := func() (v string) {
		t.Helper()
		if err := st.Pool().QueryRow(b.ctx, "SHOW lock_timeout").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := showLockTimeout()
	unlock := lockFromOutside(t, b, id)
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second) // well below the store's minute
	defer cancel()
	if _, err := st.ClaimReservation(ctx, c); !errors.Is(err, store.ErrLockTimeout) {
		t.Fatalf("heartbeat under the outside lock: err = %v, want ErrLockTimeout", err)
	}
	other := c
	other.OwnerID = "w2"
	if res, err := st.ClaimReservation(ctx, other); err != nil || res.Granted || res.Current.OwnerID != "w1" {
		t.Fatalf("w2's claim under the outside lock = %+v, %v; want w1's reservation", res, err)
	}
	unlock()
	if res, err := st.ClaimReservation(ctx, c); err != nil || !res.Granted || res.Previous.OwnerID != "w1" {
		t.Fatalf("heartbeat after unlock = %+v, %v; want an extension", res, err)
	}
	if after := showLockTimeout(); after != before {
		t.Fatalf("lock_timeout on the store's connection is %q after heartbeats, was %q", after, before)
	}
}

// TestHeartbeatThatWaitedForTheLockGetsAFullLease locks the holder's row
// from outside, without changing it, for longer than the lease: the
// heartbeat that waited for the lock is granted a lease counted from the
// database's clock after the wait, not one that ran out while it waited.
func TestHeartbeatThatWaitedForTheLockGetsAFullLease(t *testing.T) {
	t.Parallel()
	b := setup(t) // lock timeout 5s
	id := store.ID{"o", "p", "d", "k"}
	c := store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: 500 * time.Millisecond, Lease: time.Second}
	b.claim(t, c)
	unlock := lockFromOutside(t, b, id)
	type answer struct {
		res store.ClaimResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := b.store.ClaimReservation(b.ctx, c)
		done <- answer{res, err}
	}()
	waitForLockWaiter(t, b)
	time.Sleep(c.Lease + c.Lease/2) // a lease counted from before the wait runs out
	unlock()
	got := <-done
	now := b.clock.Now(t)
	if got.err != nil || !got.res.Granted || got.res.Current.OwnerID != "w1" || !got.res.Current.ExpiresAt.After(now) {
		t.Fatalf("heartbeat after waiting for the lock = %+v, %v; want w1's lease, ending after %v", got.res, got.err, now)
	}
}

// TestCacheNowFollowsTheTestClock checks the link between the migration's
// clock function and pgtest's setting: a connection string's offset and a
// database's offset both move cache_now(), and nothing else does.
func TestCacheNowFollowsTheTestClock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	skew := func(p interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) time.Duration {
		var d time.Duration
		if err := p.QueryRow(b.ctx, "SELECT cache_now() - clock_timestamp()").Scan(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	near := func(what string, got, want time.Duration) {
		t.Helper()
		if got < want-time.Second || got > want+time.Second {
			t.Errorf("%s: cache_now() is %v from the database's clock, want %v", what, got, want)
		}
	}
	near("no offset", skew(b.store.Pool()), 0)
	conn, err := pgx.Connect(b.ctx, pgtest.WithClockOffset(b.url, -90*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	near("connection string offset", skew(conn), -90*time.Minute)
	b.clock.Shift(t, 48*time.Hour)
	near("database offset", skew(b.store.Pool()), 48*time.Hour)
	near("connection string offset wins", skew(conn), -90*time.Minute)
}

func TestReleaseReservationOnlyByOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	b.claim(t, store.Claim{ID: id, OwnerID: "w1", HeartbeatInterval: time.Second, Lease: time.Minute})

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
