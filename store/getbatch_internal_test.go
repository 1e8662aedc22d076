package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// oneConnStore opens a store whose pool has a single connection, with
// entries k0..k9 stored.
func oneConnStore(t *testing.T) *Store {
	t.Helper()
	s := openStore(t, Config{MaxConns: 1, Timeout: 30 * time.Second})
	for i := range 10 {
		if err := s.PutEntry(t.Context(), Entry{ID: ID{"o", "p", "d", fmt.Sprint("k", i)}, URI: fmt.Sprint("s3://b/", i)}, Replace{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// oneConnStoreHeld is oneConnStore with an entry "big", too large for a
// shared statement, stored too, and the pool's only connection held: Gets
// queue until held is released.
func oneConnStoreHeld(t *testing.T) (s *Store, big []byte, held *pgxpool.Conn) {
	t.Helper()
	s = oneConnStore(t)
	big = bytes.Repeat([]byte{'x'}, maxBatchedInline+1)
	if err := s.PutEntry(t.Context(), Entry{ID: ID{"o", "p", "d", "big"}, Inline: big}, Replace{}); err != nil {
		t.Fatal(err)
	}
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, big, held
}

// waitQueued waits, boundedly, until n Gets wait in s's queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	waitWaiting(t, &s.gets, n)
}

// waitWaiting waits, boundedly, until n calls wait in q.
func waitWaiting[A, R any](t *testing.T, q *coalescer[A, R], n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		q.mu.Lock()
		queued := len(q.waiting)
		q.mu.Unlock()
		if queued == n {
			return
		}
	}
	t.Fatalf("%d calls never queued", n)
}

// serveBatch serves calls as one batch of q on a connection of s's pool, as
// the caller who took the connection does.
func serveBatch[A, R any](t *testing.T, s *Store, q *coalescer[A, R], ops *batchOps[A, R], calls []*pending[A, R]) {
	t.Helper()
	for _, c := range calls {
		c.done = make(chan struct{})
	}
	conn, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	q.serve(conn, ops, calls, time.Now().Add(s.timeout))
	conn.Release()
}

// TestGetsThatQueuedShareOneStatement holds the pool's only connection
// while 22 Gets queue (hits, misses, one key asked twice and one entry too
// large to batch), then frees
// it: whoever gets it serves all 21 in one statement, and each caller gets
// its own answer.
func TestGetsThatQueuedShareOneStatement(t *testing.T) {
	t.Parallel()
	s, big, held := oneConnStoreHeld(t)
	keys := []string{"k0"}
	for i := range 20 {
		keys = append(keys, fmt.Sprint("k", i)) // k0 twice, k10..k19 missing
	}
	keys = append(keys, "big") // read by its caller alone, whole
	got := make([]Entry, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() { got[i], errs[i] = s.GetEntry(t.Context(), ID{"o", "p", "d", k}) })
	}
	waitQueued(t, s, len(keys))
	held.Release()
	wg.Wait()
	if last := len(keys) - 1; errs[last] != nil || !bytes.Equal(got[last].Inline, big) {
		t.Errorf("Get of the large entry = %d bytes, %v; want all %d", len(got[last].Inline), errs[last], len(big))
	}
	keys = keys[:len(keys)-1]
	for i, k := range keys {
		var n int
		if _, err := fmt.Sscanf(k, "k%d", &n); err != nil {
			t.Fatal(err)
		}
		switch {
		case n < 10 && (errs[i] != nil || got[i].URI != fmt.Sprint("s3://b/", n) || got[i].ID.Key != k):
			t.Errorf("Get %d (%s) = %+v, %v; want its entry", i, k, got[i], errs[i])
		case n >= 10 && !errors.Is(errs[i], ErrNotFound):
			t.Errorf("Get %d (%s): err = %v, want ErrNotFound", i, k, errs[i])
		}
	}
	if n := s.gets.batched.Load(); n != int64(len(keys)+1) {
		t.Errorf("%d Gets were served by a shared statement, want all %d", n, len(keys))
	}
}

// TestBatchMemberFailuresStayTheirOwn serves one batch in which one caller
// has cancelled, and another asks for a key PostgreSQL rejects (a NUL
// byte), so that the statement fails as a whole: every other caller still
// gets its answer, the cancelled one its cancellation, and the bad key
// exactly the error it gets alone.
func TestBatchMemberFailuresStayTheirOwn(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	bad := ID{"o", "p", "d", "k\x00"}
	_, aloneErr := s.GetEntry(ctx, bad)
	if aloneErr == nil || errors.Is(aloneErr, ErrNotFound) {
		t.Fatalf("alone, the bad key gave %v; want PostgreSQL's refusal", aloneErr)
	}

	for _, withBad := range []bool{false, true} {
		cancelled, cancelIt := context.WithTimeout(t.Context(), 30*time.Second)
		cancelIt()
		calls := []*pending[ID, Entry]{
			{ctx: cancelled, arg: ID{"o", "p", "d", "k1"}}, // first: its context lends the statement its values
			{ctx: ctx, arg: ID{"o", "p", "d", "k2"}},
			{ctx: ctx, arg: ID{"o", "p", "d", "missing"}},
		}
		if withBad {
			calls = append(calls, &pending[ID, Entry]{ctx: ctx, arg: bad})
		}
		serveBatch(t, s, &s.gets, getOps, calls)

		// Its answer arrived as it gave up: kept, as the store keeps it for
		// any statement; or, when the batch failed, its cancellation.
		if e, err := s.gets.await(s, getOps, calls[0]); !errors.Is(err, context.Canceled) && (err != nil || e.URI != "s3://b/1") {
			t.Errorf("withBad=%v: cancelled caller got %+v, %v; want its entry or its cancellation", withBad, e, err)
		}
		if e, err := s.gets.await(s, getOps, calls[1]); err != nil || e.URI != "s3://b/2" {
			t.Errorf("withBad=%v: k2 = %+v, %v; want its entry", withBad, e, err)
		}
		if _, err := s.gets.await(s, getOps, calls[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("withBad=%v: missing key: err = %v, want ErrNotFound", withBad, err)
		}
		if withBad {
			if _, err := s.gets.await(s, getOps, calls[3]); err == nil || err.Error() != aloneErr.Error() {
				t.Errorf("bad key in a batch: err = %v, want %v as alone", err, aloneErr)
			}
		}
	}
}

// TestALargeEntryIsReadAloneByTheCallerWhoServedTheBatch has the caller of
// a large entry take the pool's only connection and serve the Gets that
// queued behind it: its own entry, too large for the shared statement, is
// read alone once the batch's connection is back, not by waiting for a
// connection it holds itself.
func TestALargeEntryIsReadAloneByTheCallerWhoServedTheBatch(t *testing.T) {
	t.Parallel()
	s, big, held := oneConnStoreHeld(t)
	var wg sync.WaitGroup
	var bigGot Entry
	var bigErr error
	wg.Go(func() { bigGot, bigErr = s.GetEntry(t.Context(), ID{"o", "p", "d", "big"}) })
	waitQueued(t, s, 1) // first in the pool's queue: it takes the connection
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.GetEntry(t.Context(), ID{"o", "p", "d", fmt.Sprint("k", i)}) })
	}
	waitQueued(t, s, 1+len(errs))
	start := time.Now()
	held.Release()
	wg.Wait()
	if bigErr != nil || !bytes.Equal(bigGot.Inline, big) {
		t.Errorf("Get of the large entry = %d bytes, %v (after %v); want all %d", len(bigGot.Inline), bigErr, time.Since(start), len(big))
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Get of k%d: %v", i, err)
		}
	}
	if n := s.gets.batched.Load(); n != int64(1+len(errs)) {
		t.Errorf("%d Gets were served by a shared statement, want %d", n, 1+len(errs))
	}
}

// TestCallsBeyondTheirKindsSlotsQueue takes every slot Gets have (two, on a
// pool of eight), so that Gets queue although connections are free. One
// that gives up while it waits is answered with its cancellation at once.
// Freeing one slot lets one of the others serve all of them in one
// statement, and every slot is given back after.
func TestCallsBeyondTheirKindsSlotsQueue(t *testing.T) {
	t.Parallel()
	s := openStore(t, Config{MaxConns: 8, Timeout: 30 * time.Second})
	if got := [2]int{cap(s.gets.slots), cap(s.puts.slots)}; got != [2]int{2, 2} {
		t.Fatalf("slots of Gets and Puts on a pool of 8 = %v, want 2 each", got)
	}
	for i := range 10 {
		if err := s.PutEntry(t.Context(), Entry{ID: ID{"o", "p", "d", fmt.Sprint("k", i)}, URI: fmt.Sprint("s3://b/", i)}, Replace{}); err != nil {
			t.Fatal(err)
		}
	}
	for range cap(s.gets.slots) {
		s.gets.slots <- struct{}{}
	}
	quitter, quit := context.WithCancel(t.Context())
	quitErr := make(chan error, 1)
	go func() {
		_, err := s.GetEntry(quitter, ID{"o", "p", "d", "k0"})
		quitErr <- err
	}()
	waitQueued(t, s, 1)
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("a Get that gave up waiting for a slot = %v, want its cancellation", err)
	}

	got := make([]Entry, 10)
	errs := make([]error, 10)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i], errs[i] = s.GetEntry(t.Context(), ID{"o", "p", "d", fmt.Sprint("k", i)}) })
	}
	waitQueued(t, s, len(got))
	<-s.gets.slots
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i].URI != fmt.Sprint("s3://b/", i) {
			t.Errorf("Get of k%d = %+v, %v; want its entry", i, got[i], errs[i])
		}
	}
	if n := s.gets.batched.Load(); n != int64(len(got)) {
		t.Errorf("%d Gets were served by a shared statement, want all %d", n, len(got))
	}
	<-s.gets.slots
	if n := len(s.gets.slots); n != 0 {
		t.Errorf("%d slots still taken after every Get returned", n)
	}
}

// TestABatchLeavesCallersWhoGaveUp: a call whose caller has already given
// up stays queued for its own goroutine to answer, and is not served by
// the batch (a Put stored for a caller told it failed).
func TestABatchLeavesCallersWhoGaveUp(t *testing.T) {
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	var q coalescer[ID, Entry]
	first := &pending[ID, Entry]{ctx: t.Context()}
	waiting := []*pending[ID, Entry]{{ctx: t.Context()}, {ctx: gone}, {ctx: t.Context()}, {ctx: t.Context()}}
	q.waiting = slices.Clone(waiting)
	batch := q.take(first, 3)
	if want := []*pending[ID, Entry]{first, waiting[0], waiting[2]}; !slices.Equal(batch, want) {
		t.Errorf("batch = %v, want the first caller and the next two still waiting (%v)", batch, want)
	}
	if want := []*pending[ID, Entry]{waiting[1], waiting[3]}; !slices.Equal(q.waiting, want) || waiting[1].taken || waiting[3].taken {
		t.Errorf("left waiting %v, want the one who gave up and the one over the limit (%v), not taken", q.waiting, want)
	}
}

// TestACheckoutsPingOutlivesItsCallersDeadline: the pool pings a
// connection idle for over a second under the checkout's deadline, and a
// ping that deadline cuts breaks the connection. A Get whose caller allows
// it 200 ms must therefore check out under the store's deadline, while
// still answering its caller in time.
func TestACheckoutsPingOutlivesItsCallersDeadline(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var left []time.Duration // how long each checkout's ping could take
	cfg.ShouldPing = func(ctx context.Context, _ pgxpool.ShouldPingParams) bool {
		d, ok := ctx.Deadline()
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			left = append(left, time.Hour)
		} else {
			left = append(left, time.Until(d))
		}
		return false
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newStore(pool, 30*time.Second, time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.GetEntry(ctx, ID{"o", "p", "d", "k"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(left) == 0 {
		t.Fatal("the Get checked out no connection")
	}
	for _, l := range left {
		if l < 10*time.Second {
			t.Errorf("a checkout left its ping %v; want the store's deadline (30s), not the caller's", l)
		}
	}
}
