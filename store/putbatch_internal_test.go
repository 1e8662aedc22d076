package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestPutsThatQueuedShareOneBatch holds the pool's only connection while
// Puts queue (new keys, an existing key that may not be replaced, one that
// may, and two Puts of one new key), then frees it: whoever gets it serves
// them all in one batch, and each caller gets its own answer, as alone.
func TestPutsThatQueuedShareOneBatch(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type put struct {
		key, uri string
		replace  Replace
	}
	puts := []put{
		{"k0", "s3://b/k0-again", Replace{}},           // exists: ErrConflict
		{"k1", "s3://b/k1-new", Replace{Always: true}}, // replaced
		{"twice", "s3://b/twice-1", Replace{}},         // one of these two wins
		{"twice", "s3://b/twice-2", Replace{}},
	}
	for i := range 12 {
		puts = append(puts, put{fmt.Sprint("n", i), fmt.Sprint("s3://b/n", i), Replace{}})
	}
	errs := make([]error, len(puts))
	var wg sync.WaitGroup
	for i, p := range puts {
		wg.Go(func() {
			errs[i] = s.PutEntry(t.Context(), Entry{ID: ID{"o", "p", "d", p.key}, URI: p.uri}, p.replace)
		})
	}
	waitWaiting(t, &s.puts, len(puts))
	held.Release()
	wg.Wait()

	if n := s.puts.batched.Load(); n != int64(len(puts)) {
		t.Errorf("%d Puts were served by a shared batch, want %d", n, len(puts))
	}
	uri := func(key string) string {
		e, err := s.GetEntry(t.Context(), ID{"o", "p", "d", key})
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		return e.URI
	}
	if !errors.Is(errs[0], ErrConflict) || uri("k0") != "s3://b/0" {
		t.Errorf("Put of existing k0 = %v, entry %s; want ErrConflict and the old entry", errs[0], uri("k0"))
	}
	if errs[1] != nil || uri("k1") != "s3://b/k1-new" {
		t.Errorf("replacing Put of k1 = %v, entry %s; want it replaced", errs[1], uri("k1"))
	}
	switch got := uri("twice"); {
	case errs[2] == nil && errors.Is(errs[3], ErrConflict) && got == puts[2].uri:
	case errs[3] == nil && errors.Is(errs[2], ErrConflict) && got == puts[3].uri:
	default:
		t.Errorf("two Puts of one new key = %v, %v, entry %s; want one stored and the other ErrConflict", errs[2], errs[3], got)
	}
	for i, p := range puts[4:] {
		if errs[4+i] != nil || uri(p.key) != p.uri {
			t.Errorf("Put of new %s = %v, entry %s; want it stored", p.key, errs[4+i], uri(p.key))
		}
	}
}

// TestPutBatchMemberFailuresStayTheirOwn serves one batch in which one
// caller has cancelled and another's entry is refused by PostgreSQL (a NUL
// byte), which aborts the batch's transaction: nothing of it is kept, so
// every other caller, served again alone, stores its entry without finding
// its own Put in the way; the refused one gets exactly the error it gets
// alone, and the cancelled one its cancellation or its answer.
func TestPutBatchMemberFailuresStayTheirOwn(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	bad := Entry{ID: ID{"o", "p", "d", "bad"}, URI: "s3://b/bad", SourceName: "task\x00"}
	aloneErr := s.PutEntry(ctx, bad, Replace{})
	if aloneErr == nil || errors.Is(aloneErr, ErrConflict) {
		t.Fatalf("alone, the bad entry gave %v; want PostgreSQL's refusal", aloneErr)
	}

	for _, withBad := range []bool{false, true} {
		cancelled, cancelIt := context.WithTimeout(t.Context(), 30*time.Second)
		cancelIt()
		key := func(k string) ID { return ID{"o", "p", "d", fmt.Sprintf("%s-%v", k, withBad)} }
		calls := []*pending[putArg, struct{}]{
			{ctx: cancelled, arg: putArg{e: Entry{ID: key("a"), URI: "s3://b/a"}}}, // first: its context lends the batch its values
			{ctx: ctx, arg: putArg{e: Entry{ID: key("b"), URI: "s3://b/b"}}},
			{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", "k3"}, URI: "s3://b/k3-again"}}},
		}
		if withBad {
			calls = append(calls, &pending[putArg, struct{}]{ctx: ctx, arg: putArg{e: bad}})
		}
		serveBatch(t, s, &s.puts, putOps, calls)

		if _, err := s.puts.await(s, putOps, calls[0]); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("withBad=%v: cancelled caller got %v; want its answer or its cancellation", withBad, err)
		}
		if _, err := s.puts.await(s, putOps, calls[1]); err != nil {
			t.Errorf("withBad=%v: Put of a new key = %v; want it stored", withBad, err)
		}
		if e, err := s.GetEntry(ctx, key("b")); err != nil || e.URI != "s3://b/b" {
			t.Errorf("withBad=%v: entry b = %+v, %v; want it stored once", withBad, e, err)
		}
		if _, err := s.puts.await(s, putOps, calls[2]); !errors.Is(err, ErrConflict) {
			t.Errorf("withBad=%v: Put of existing k3 = %v; want ErrConflict", withBad, err)
		}
		if withBad {
			if _, err := s.puts.await(s, putOps, calls[3]); err == nil || err.Error() != aloneErr.Error() {
				t.Errorf("bad entry in a batch: err = %v, want %v as alone", err, aloneErr)
			}
			if _, err := s.GetEntry(ctx, bad.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("bad entry: Get = %v, want ErrNotFound", err)
			}
		}
	}
}

// TestAPutBatchWhoseConnectionIsLostIsNotRunAgain loses the connection
// under a batch. Lost before anything was sent, nothing can have been
// stored, so each Put is served again alone and stored. Lost after the
// batch was sent (the answers cannot be read), no caller can know whether
// its entry was stored, so each gets the error a lone Put gets, and none
// is run again (a Put that was stored would then answer ErrConflict to
// its own caller).
func TestAPutBatchWhoseConnectionIsLostIsNotRunAgain(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, sent := range []bool{false, true} {
		calls := []*pending[putArg, struct{}]{
			{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", fmt.Sprint("lost-a-", sent)}, URI: "s3://b/a"}}},
			{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", fmt.Sprint("lost-b-", sent)}, URI: "s3://b/b"}}},
		}
		for _, c := range calls {
			c.done = make(chan struct{})
		}
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		raw := conn.Conn().PgConn().Conn()
		if d, ok := raw.(*dialedConn); ok {
			raw = d.Conn
		}
		if sent {
			// A batch first, so that pgx has its statements prepared
			// and sends the next one at once.
			warm := []*pending[putArg, struct{}]{
				{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", "warm-a"}, URI: "s3://b/a"}}, done: make(chan struct{})},
				{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", "warm-b"}, URI: "s3://b/b"}}, done: make(chan struct{})},
			}
			s.puts.serve(conn, putOps, warm, time.Now().Add(s.timeout))
			if warm[0].retry || warm[0].err != nil {
				t.Fatalf("warming batch: served again alone %v, err %v", warm[0].retry, warm[0].err)
			}
			// Writes still go out; reads find the connection closed.
			if err := raw.(interface{ CloseRead() error }).CloseRead(); err != nil {
				t.Fatal(err)
			}
		} else {
			_ = raw.Close()
		}
		s.puts.serve(conn, putOps, calls, time.Now().Add(s.timeout))
		conn.Release()
		for i, c := range calls {
			_, err := s.puts.await(s, putOps, c)
			switch {
			case !sent && (!c.retry || err != nil):
				t.Errorf("lost before it was sent: call %d: served again alone %v, err %v; want true, nil", i, c.retry, err)
			case sent && (c.retry || err == nil || errors.Is(err, ErrConflict)):
				t.Errorf("lost after it was sent: call %d: served again alone %v, err %v; want false and the lost connection's error", i, c.retry, err)
			}
		}
		if !sent {
			for i, c := range calls {
				if e, err := s.GetEntry(ctx, c.arg.e.ID); err != nil || e.URI != c.arg.e.URI {
					t.Errorf("lost before it was sent: call %d: entry %+v, %v; want it stored alone", i, e, err)
				}
			}
		}
	}
}

// TestAPutBatchGivesWayToAnotherSessionsLocks builds the deadlock a batch
// could otherwise be part of. The batch replaces a, m and z in key order;
// another session holds z and, once the batch holds a, asks for a; a third
// holds m until then, so the batch is stuck at m. Without giving way the
// batch would go on to wait for z, closing the cycle, and PostgreSQL would
// abort the session that waited first: the other one. The batch gives way
// instead: it stores nothing, the other session gets every lock it asks
// for, and each Put, served again alone, is stored.
func TestAPutBatchGivesWayToAnotherSessionsLocks(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openStore(t, Config{URL: url, MaxConns: 1, Timeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	keys := []string{"a", "m", "z"}
	for _, k := range keys {
		if err := s.PutEntry(ctx, Entry{ID: ID{"o", "p", "d", k}, URI: "s3://b/old-" + k}, Replace{}); err != nil {
			t.Fatal(err)
		}
	}
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	other, holderOfM, watch := connect(), connect(), connect()
	lock := func(c *pgx.Conn, key string) error {
		_, err := c.Exec(ctx, `SELECT 1 FROM cache_entries WHERE key = $1 FOR UPDATE`, key)
		return err
	}
	for c, key := range map[*pgx.Conn]string{holderOfM: "m", other: "z"} {
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if err := lock(c, key); err != nil {
			t.Fatal(err)
		}
	}
	// waitFor polls until cond holds, boundedly.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	waitingForALock := func(pid uint32) bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND ($1 = 0 OR pid = $1)`, int64(pid)).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	held, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	putErrs := make([]error, len(keys))
	var puts sync.WaitGroup
	for i, k := range keys {
		puts.Go(func() {
			putErrs[i] = s.PutEntry(ctx, Entry{ID: ID{"o", "p", "d", k}, URI: "s3://b/new-" + k}, Replace{Always: true})
		})
	}
	waitWaiting(t, &s.puts, len(keys))
	held.Release()
	// The batch holds a and waits for m, or has given way already.
	waitFor("the batch waits for m", func() bool { return s.puts.retried.Load() > 0 || waitingForALock(0) })

	otherLocked := make(chan error, 1)
	go func() { otherLocked <- lock(other, "a") }()
	waitFor("the other session asks for a", func() bool {
		return len(otherLocked) > 0 || waitingForALock(other.PgConn().PID())
	})
	if _, err := holderOfM.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-otherLocked; err != nil {
		t.Fatalf("the other session's lock of a: %v; want it granted once the batch gave way", err)
	}
	if _, err := other.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	puts.Wait()
	for i, k := range keys {
		if putErrs[i] != nil {
			t.Errorf("Put of %s: %v", k, putErrs[i])
		}
		if e, err := s.GetEntry(ctx, ID{"o", "p", "d", k}); err != nil || e.URI != "s3://b/new-"+k {
			t.Errorf("entry %s = %q, %v; want it replaced", k, e.URI, err)
		}
	}
	if n := s.puts.retried.Load(); n != int64(len(keys)) {
		t.Errorf("%d Puts were served again alone, want %d: the batch gave way", n, len(keys))
	}
}

// TestOneCallersDeadlineNeverCutsTheOthersBatch lets a caller whose own
// deadline is a few milliseconds after its store deadline take the
// connection for 31 Puts that queued behind it, with no deadline of their
// own. Run on that caller's goroutine under its deadline, the batch was
// cut and every other Put answered unavailable; it must run under a store
// deadline of its own.
func TestOneCallersDeadlineNeverCutsTheOthersBatch(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	s := openStore(t, Config{MaxConns: 1, Timeout: timeout})
	for round := range 6 {
		held, err := s.pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		margin := time.Duration(round%3+1) * time.Millisecond
		first, cancel := context.WithDeadline(t.Context(), start.Add(timeout+margin))
		var wg sync.WaitGroup
		wg.Go(func() {
			_ = s.PutEntry(first, Entry{ID: ID{"o", "p", "d", fmt.Sprint("first-", round)}, URI: "s3://b/f"}, Replace{Always: true})
		})
		waitWaiting(t, &s.puts, 1)
		// The others come later, so that their own store deadlines leave
		// them time once the first caller takes the connection.
		time.Sleep(time.Until(start.Add(timeout / 2)))
		errs := make([]error, maxWriteBatch-1)
		for i := range errs {
			wg.Go(func() {
				errs[i] = s.PutEntry(t.Context(), Entry{ID: ID{"o", "p", "d", fmt.Sprint("other-", round, "-", i)}, URI: "s3://b/o"}, Replace{Always: true})
			})
		}
		waitWaiting(t, &s.puts, maxWriteBatch)
		time.Sleep(time.Until(start.Add(timeout - time.Millisecond)))
		held.Release()
		wg.Wait()
		cancel()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d (first caller's deadline %v after its store's): Put %d = %v, want it stored", round, margin, i, err)
			}
		}
	}
}
