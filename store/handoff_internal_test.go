package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// openStore opens a store on cfg, on a fresh database unless cfg names
// one, closed when the test ends.
func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = pgtest.NewDatabase(t)
	}
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// detachStore opens a store with a short deadline of its own, so that
// callers can bring deadlines on either side of it.
func detachStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, Config{MaxConns: 2, Timeout: 2 * time.Second})
}

// callerWithin returns a caller whose deadline is d from now, and the
// store's context for it; both end at cleanup.
func callerWithin(t *testing.T, s *Store, d time.Duration) (caller, ctx context.Context) {
	t.Helper()
	caller, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	ctx, stop := s.deadline(caller)
	t.Cleanup(stop)
	return caller, ctx
}

// TestPromisedAnswerReachesACallerPastItsDeadline replays the interleaving
// that orphaned a grant: the caller's deadline (before the store's, so the
// statement runs on a goroutine of its own) passes after the statement
// decided that its caller was still there (callerGone, which claims call
// before giving back what they granted) but before it handed its answer
// over. The caller must get that answer, not its deadline: it is the only
// one who will learn the grant.
func TestPromisedAnswerReachesACallerPastItsDeadline(t *testing.T) {
	t.Parallel()
	s := detachStore(t)
	caller, ctx := callerWithin(t, s, 200*time.Millisecond)
	if s.runsHere(ctx) {
		t.Fatal("a caller whose deadline comes first runs here; want a goroutine of its own")
	}
	granted := errors.New("granted") // stands for the answer of a committed grant
	err := s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			return err
		}
		if gone := callerGone(ctx, caller); gone != nil {
			return gone
		}
		<-caller.Done() // the caller's deadline passes before the answer is handed over
		time.Sleep(20 * time.Millisecond)
		return granted
	})
	if !errors.Is(err, granted) {
		t.Fatalf("detach answered %v; want the answer the statement promised", err)
	}
}

// TestCallerWhoLeftIsToldSoToItsStatement: once the caller has left, a
// statement on a goroutine of its own learns it from callerGone, so that it
// undoes what it did for that caller alone (a claim gives its grant back).
func TestCallerWhoLeftIsToldSoToItsStatement(t *testing.T) {
	t.Parallel()
	s := detachStore(t)
	caller, ctx := callerWithin(t, s, 100*time.Millisecond)
	told := make(chan error, 1)
	err := s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(0.3)") // outlives the caller
		told <- callerGone(ctx, caller)
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("detach answered %v; want the caller's deadline", err)
	}
	select {
	case gone := <-told:
		if !errors.Is(gone, context.DeadlineExceeded) {
			t.Fatalf("callerGone = %v after the caller left; want its deadline", gone)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the statement never ended")
	}
}

// TestStatementRunsOnTheCallersGoroutineWhenTheStoreDeadlineIsFirst: a
// caller with no deadline, or a later one than the store's, has its
// statement run on its own goroutine, detached from its cancellation: a
// caller cancelled mid-statement gets the statement's answer (it ends by
// the store's deadline, before the caller's), and the connection is not
// broken to interrupt it.
func TestStatementRunsOnTheCallersGoroutineWhenTheStoreDeadlineIsFirst(t *testing.T) {
	t.Parallel()
	s := detachStore(t)
	// Dial both of the pool's connections first, so that any later dial
	// is a connection broken by a cancelled statement.
	c1, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c1.Release()
	c2.Release()
	for _, tc := range []struct {
		name     string
		deadline time.Duration // 0: none
	}{{"no deadline", 0}, {"a later deadline", time.Minute}} {
		caller, cancel := context.WithCancel(t.Context())
		if tc.deadline > 0 {
			caller, cancel = context.WithTimeout(t.Context(), tc.deadline)
		}
		ctx, stop := s.deadline(caller)
		if !s.runsHere(ctx) {
			t.Fatalf("%s: want the statement run on the caller's goroutine", tc.name)
		}
		before := s.pool.Stat()
		time.AfterFunc(50*time.Millisecond, cancel)
		err := s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(0.2)")
			return err
		})
		stop()
		cancel()
		if err != nil {
			t.Fatalf("%s: cancelled mid-statement, detach answered %v; want the statement's answer", tc.name, err)
		}
		after := s.pool.Stat()
		if after.TotalConns() != before.TotalConns() || after.NewConnsCount() != before.NewConnsCount() {
			t.Fatalf("%s: pool went from %d connections (%d dialled) to %d (%d dialled); want the connection kept",
				tc.name, before.TotalConns(), before.NewConnsCount(), after.TotalConns(), after.NewConnsCount())
		}
	}
}

// TestTakeoverWhoseCallerLeftIsGivenBack: a claim that takes over an
// expired reservation waits for its row lock, held from outside, past its
// caller's deadline. When the lock is granted the takeover commits, and,
// its caller gone, must be given back: nobody would learn it owns the key,
// which would wait out a whole lease. The answer is the caller's deadline,
// never the grant it did not receive (run with -race, the claim's result
// must not be written by the statement after the caller was answered).
func TestTakeoverWhoseCallerLeftIsGivenBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	s := openStore(t, Config{URL: url, MaxConns: 2, Timeout: 5 * time.Second})
	id := ID{"o", "p", "d", "taken-over"}
	if _, err := s.ClaimReservation(ctx, Claim{ID: id, OwnerID: "old", HeartbeatInterval: time.Millisecond, Lease: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // old's lease expires

	outside, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close(context.Background())
	tx, err := outside.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM reservations WHERE key = $1 FOR UPDATE`, id.Key); err != nil {
		t.Fatal(err)
	}
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		time.Sleep(300 * time.Millisecond)
		_ = tx.Commit(context.Background())
	}()
	defer func() { <-committed }()

	caller, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	res, err := s.ClaimReservation(caller, Claim{ID: id, OwnerID: "new", HeartbeatInterval: time.Second, Lease: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim answered %+v, %v; want the caller's deadline", res, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		held, err := s.GetReservation(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return // given back
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("reservation %+v still held after its claim's caller left; want it given back", held)
		}
	}
}

// TestFirstComersOfANewKeyTakeNoLock: many claimants of a key nobody holds
// arrive at once (identical tasks starting together). One inserts; the
// others' inserts wait for it and conflict with a row their statement's
// snapshot does not hold. Each reads it again instead of queueing for its
// row lock: none takes the locked path, and all are told the one owner.
func TestFirstComersOfANewKeyTakeNoLock(t *testing.T) {
	t.Parallel()
	s := openStore(t, Config{MaxConns: 16, Timeout: 30 * time.Second})
	const keys, claimants = 20, 16
	for k := range keys {
		id := ID{"o", "p", "d", fmt.Sprint("burst-", k)}
		start := make(chan struct{})
		results := make([]ClaimResult, claimants)
		errs := make([]error, claimants)
		var wg sync.WaitGroup
		for i := range claimants {
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.ClaimReservation(t.Context(), Claim{ID: id, OwnerID: fmt.Sprint("w", i), HeartbeatInterval: time.Second, Lease: time.Minute})
			})
		}
		close(start)
		wg.Wait()
		granted := 0
		for i, r := range results {
			if errs[i] != nil {
				t.Fatalf("%s: claimant %d: %v", id.Key, i, errs[i])
			}
			if r.Granted {
				granted++
			}
			if r.Current.OwnerID != results[0].Current.OwnerID {
				t.Fatalf("%s: claimants told owners %q and %q", id.Key, results[0].Current.OwnerID, r.Current.OwnerID)
			}
		}
		if granted != 1 {
			t.Fatalf("%s: %d claimants granted; want exactly one", id.Key, granted)
		}
	}
	if n := s.lockedClaims.Load(); n != 0 {
		t.Fatalf("%d of %d first-comers took the row lock; want none", n, keys*claimants)
	}
}

// TestHeartbeatsTakeNoLockAndKeepTheKey: the holder's heartbeats, several
// at once, race claimants that want its key. Every heartbeat extends the
// holder's lease without a transaction, none takes the locked path, and
// no other claimant is ever granted the key.
func TestHeartbeatsTakeNoLockAndKeepTheKey(t *testing.T) {
	t.Parallel()
	s := openStore(t, Config{MaxConns: 16, Timeout: 30 * time.Second})
	id := ID{"o", "p", "d", "held"}
	claim := func(owner string) (ClaimResult, error) {
		return s.ClaimReservation(t.Context(), Claim{ID: id, OwnerID: owner, HeartbeatInterval: time.Second, Lease: time.Minute})
	}
	first, err := claim("holder")
	if err != nil || !first.Created {
		t.Fatalf("first claim = %+v, %v; want it created", first, err)
	}
	const callers, rounds = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	var latest time.Time
	for i := range 2 * callers {
		wg.Go(func() {
			owner := "holder"
			if i%2 == 1 {
				owner = fmt.Sprint("other-", i)
			}
			for range rounds {
				res, err := claim(owner)
				switch {
				case err != nil:
					t.Errorf("%s: %v", owner, err)
					return
				case owner == "holder" && (!res.Granted || res.Created || res.Previous.OwnerID != "holder" || res.Current.OwnerID != "holder" || !res.Current.ExpiresAt.After(first.Current.ExpiresAt)):
					t.Errorf("heartbeat = %+v; want an extension of the holder's lease", res)
					return
				case owner != "holder" && (res.Granted || res.Current.OwnerID != "holder"):
					t.Errorf("%s's claim = %+v; want the holder's lease, not granted", owner, res)
					return
				}
				if owner == "holder" {
					mu.Lock()
					if res.Current.ExpiresAt.After(latest) {
						latest = res.Current.ExpiresAt
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if n := s.lockedClaims.Load(); n != 0 {
		t.Errorf("%d claims took the row lock; want none", n)
	}
	stored, err := s.GetReservation(t.Context(), id)
	if err != nil || stored.OwnerID != "holder" || !stored.ExpiresAt.Equal(latest) {
		t.Errorf("stored %+v, %v; want the holder's latest lease, ending %v", stored, err, latest)
	}
}
