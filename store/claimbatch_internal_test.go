package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// aClaim is owner's claim of key, for a minute's lease.
func aClaim(key, owner string) Claim {
	return Claim{ID: ID{"o", "p", "d", key}, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute}
}

// TestClaimsThatQueuedShareOneBatch holds the pool's only connection while
// claims queue: first-comers of new keys, two claimants of one new key, a
// claimant of a key another holds, and the holder of a key heartbeating.
// Whoever gets the connection serves them all in one batch, and each gets
// the outcome it gets alone: one owner per key, the heartbeat extended.
func TestClaimsThatQueuedShareOneBatch(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx := t.Context()
	for _, c := range []Claim{aClaim("held", "x"), aClaim("mine", "me")} {
		if r, err := s.ClaimReservation(ctx, c); err != nil || !r.Created {
			t.Fatalf("seed %s: %+v, %v", c.ID.Key, r, err)
		}
	}
	mine, err := s.ClaimReservation(ctx, aClaim("mine", "me")) // a heartbeat: its lease as it stands
	if err != nil || !mine.Granted {
		t.Fatalf("seed heartbeat: %+v, %v", mine, err)
	}
	claims := []Claim{aClaim("held", "y"), aClaim("mine", "me"), aClaim("twice", "a"), aClaim("twice", "b")}
	for i := range 8 {
		claims = append(claims, aClaim(fmt.Sprint("new-", i), fmt.Sprint("w", i)))
	}
	held, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results := make([]ClaimResult, len(claims))
	errs := make([]error, len(claims))
	var wg sync.WaitGroup
	for i, c := range claims {
		wg.Go(func() { results[i], errs[i] = s.ClaimReservation(ctx, c) })
	}
	waitWaiting(t, &s.claims, len(claims))
	held.Release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claim %d (%s by %s): %v", i, claims[i].ID.Key, claims[i].OwnerID, err)
		}
	}
	if n := s.claims.batched.Load(); n != int64(len(claims)) {
		t.Errorf("%d claims were served by a shared batch, want all %d", n, len(claims))
	}
	if r := results[0]; r.Granted || r.Current.OwnerID != "x" {
		t.Errorf("claim of a key x holds = %+v; want it refused, x the owner", r)
	}
	if r := results[1]; !r.Granted || r.Created || !r.Current.ExpiresAt.After(mine.Current.ExpiresAt) {
		t.Errorf("heartbeat = %+v; want its lease extended past %v", r, mine.Current.ExpiresAt)
	}
	a, b := results[2], results[3]
	if a.Granted == b.Granted || !a.Created && !b.Created || a.Current.OwnerID != b.Current.OwnerID {
		t.Errorf("two first-comers of one key = %+v and %+v; want exactly one granted, both told its name", a, b)
	}
	for i, r := range results[4:] {
		if !r.Created || !r.Granted || r.Current.OwnerID != claims[4+i].OwnerID {
			t.Errorf("first-comer of %s = %+v; want it granted", claims[4+i].ID.Key, r)
		}
	}
	if n := s.lockedClaims.Load(); n != 0 {
		t.Errorf("%d claims took the row lock; want none", n)
	}
}

// TestAClaimBatchGivesBackTheGrantOfACallerWhoLeft serves a batch in which
// one caller has left before its grant is settled: the grant is given back
// (the key is free for the next claimant) while the other caller's stays.
func TestAClaimBatchGivesBackTheGrantOfACallerWhoLeft(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx := t.Context()
	left, leave := context.WithCancel(ctx)
	leave()
	calls := []*pending[claimArg, ClaimResult]{
		{ctx: ctx, arg: claimArg{c: aClaim("gone", "g"), caller: left}},
		{ctx: ctx, arg: claimArg{c: aClaim("stays", "s"), caller: ctx}},
	}
	serveBatch(t, s, &s.claims, claimOps, calls)
	if calls[0].retry || calls[1].retry {
		t.Fatal("the batch failed; want both served by it")
	}
	if _, err := s.claims.await(s, claimOps, calls[0]); err == nil {
		t.Error("the caller who left got its grant; want its cancellation")
	}
	if r, err := s.claims.await(s, claimOps, calls[1]); err != nil || !r.Created {
		t.Errorf("the caller who stayed = %+v, %v; want its grant", r, err)
	}
	if r, err := s.ClaimReservation(ctx, aClaim("gone", "next")); err != nil || !r.Created {
		t.Errorf("next claimant of the given-back key = %+v, %v; want it granted anew", r, err)
	}
	if r, err := s.ClaimReservation(ctx, aClaim("stays", "next")); err != nil || r.Granted {
		t.Errorf("next claimant of the kept key = %+v, %v; want it refused", r, err)
	}
}

// TestAHeartbeatsLockWaitHoldsUpNoOtherClaim: a heartbeat whose row another
// session has locked waits for it (up to the lock timeout), but alone: the
// first-comers that shared its batch are answered at once.
func TestAHeartbeatsLockWaitHoldsUpNoOtherClaim(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openStore(t, Config{URL: url, MaxConns: 1, Timeout: 30 * time.Second, LockTimeout: 20 * time.Second})
	ctx := t.Context()
	if r, err := s.ClaimReservation(ctx, aClaim("mine", "me")); err != nil || !r.Created {
		t.Fatalf("seed: %+v, %v", r, err)
	}
	locker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Close(context.Background()) }()
	if _, err := locker.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := locker.Exec(ctx, "SELECT 1 FROM reservations WHERE key = 'mine' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	held, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	claims := []Claim{aClaim("mine", "me"), aClaim("new-0", "a"), aClaim("new-1", "b")}
	type answer struct {
		r   ClaimResult
		err error
	}
	answers := make([]chan answer, len(claims))
	for i, c := range claims {
		answers[i] = make(chan answer, 1)
		go func() {
			r, err := s.ClaimReservation(ctx, c)
			answers[i] <- answer{r, err}
		}()
	}
	waitWaiting(t, &s.claims, len(claims))
	held.Release()
	for i := 1; i < len(claims); i++ {
		select {
		case a := <-answers[i]:
			if a.err != nil || !a.r.Created {
				t.Errorf("first-comer of %s = %+v, %v; want it granted", claims[i].ID.Key, a.r, a.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("first-comer of %s still waits behind the locked heartbeat", claims[i].ID.Key)
		}
	}
	if n := s.claims.batched.Load(); n != int64(len(claims)) {
		t.Errorf("%d claims shared a batch, want %d", n, len(claims))
	}
	if _, err := locker.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if a := <-answers[0]; a.err != nil || !a.r.Granted {
		t.Errorf("heartbeat = %+v, %v; want it extended once the lock is gone", a.r, a.err)
	}
}

// TestLockedHeartbeatsHoldNoClaimSlot: heartbeats waiting for rows another
// session has locked, as many as claims have slots, each served alone,
// must not keep a first-comer of another key waiting: their lock waits run
// outside the slots.
func TestLockedHeartbeatsHoldNoClaimSlot(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openStore(t, Config{URL: url, MaxConns: 8, Timeout: 30 * time.Second, LockTimeout: 20 * time.Second})
	ctx := t.Context()
	locker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Close(context.Background()) }()
	keys := make([]string, cap(s.claims.slots))
	for i := range keys {
		keys[i] = fmt.Sprint("mine-", i)
		if r, err := s.ClaimReservation(ctx, aClaim(keys[i], "me")); err != nil || !r.Created {
			t.Fatalf("seed %s: %+v, %v", keys[i], r, err)
		}
	}
	if _, err := locker.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := locker.Exec(ctx, "SELECT 1 FROM reservations WHERE owner_id = 'me' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	waiting := func() int {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// One after the other, so that each is served alone.
	heartbeats := make(chan error, len(keys))
	for i, k := range keys {
		go func() {
			_, err := s.ClaimReservation(ctx, aClaim(k, "me"))
			heartbeats <- err
		}()
		for deadline := time.Now().Add(20 * time.Second); waiting() != i+1; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("heartbeat %d never waited for its row", i)
			}
		}
	}
	first, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if r, err := s.ClaimReservation(first, aClaim("new", "a")); err != nil || !r.Created {
		t.Errorf("first-comer of another key while heartbeats wait = %+v, %v; want it granted at once", r, err)
	}
	if _, err := locker.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	for range keys {
		if err := <-heartbeats; err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}
}
