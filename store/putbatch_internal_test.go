package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
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
		for _, c := range calls {
			c.done = make(chan struct{})
		}
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.puts.serve(conn, putOps, calls, time.Now().Add(s.timeout))
		conn.Release()

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
// under a batch as it is sent: no caller can know whether its entry was
// stored, so each gets the error a lone Put gets, and none is run again
// (a Put that was stored would then answer ErrConflict to its own caller).
func TestAPutBatchWhoseConnectionIsLostIsNotRunAgain(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	calls := []*pending[putArg, struct{}]{
		{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", "lost-a"}, URI: "s3://b/a"}}},
		{ctx: ctx, arg: putArg{e: Entry{ID: ID{"o", "p", "d", "lost-b"}, URI: "s3://b/b"}}},
	}
	for _, c := range calls {
		c.done = make(chan struct{})
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Conn().PgConn().Conn().Close()
	s.puts.serve(conn, putOps, calls, time.Now().Add(s.timeout))
	conn.Release()
	for i, c := range calls {
		if c.retry {
			t.Errorf("call %d is to be served again alone", i)
		}
		if _, err := s.puts.await(s, putOps, c); err == nil || errors.Is(err, ErrConflict) {
			t.Errorf("call %d = %v; want the lost connection's error", i, err)
		}
		if _, err := s.GetEntry(ctx, c.arg.e.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("call %d: Get = %v; want ErrNotFound (nothing reached the database)", i, err)
		}
	}
}
