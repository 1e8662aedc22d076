package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestPutsThatQueuedShareOneInsert holds the pool's only connection while
// 24 non-replacing Puts queue: new keys, three Puts of one new key, and a
// key that exists. Then it frees the connection: one INSERT serves them
// all, each new key has exactly one winner whose value is stored, and the
// rest are ErrConflict, as alone.
func TestPutsThatQueuedShareOneInsert(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t) // k0..k9 exist
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var puts []Entry
	for i := range 20 {
		puts = append(puts, Entry{ID: ID{"o", "p", "d", fmt.Sprint("new", i)}, Inline: []byte{byte(i)}, Labels: map[string]string{"i": fmt.Sprint(i)}})
	}
	for w := range 3 {
		puts = append(puts, Entry{ID: ID{"o", "p", "d", "contested"}, URI: fmt.Sprint("s3://b/writer-", w)})
	}
	puts = append(puts, Entry{ID: ID{"o", "p", "d", "k3"}, URI: "s3://b/late"})
	errs := make([]error, len(puts))
	var wg sync.WaitGroup
	for i, e := range puts {
		wg.Go(func() { errs[i] = s.PutEntry(t.Context(), e, Replace{}) })
	}
	waitQueued(t, s, func() int { return len(s.puts.waiting) }, len(puts))
	held.Release()
	wg.Wait()

	for i := range 20 {
		got, err := s.GetEntry(t.Context(), puts[i].ID)
		if errs[i] != nil || err != nil || len(got.Inline) != 1 || got.Inline[0] != byte(i) || got.Labels["i"] != fmt.Sprint(i) {
			t.Errorf("new%d: put %v, stored %+v, %v; want it stored", i, errs[i], got, err)
		}
	}
	winner := -1
	for w := range 3 {
		switch err := errs[20+w]; {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both stored the contested key", winner, w)
		case err == nil:
			winner = w
		case !errors.Is(err, ErrConflict):
			t.Errorf("writer %d: err = %v, want ErrConflict", w, err)
		}
	}
	if got, err := s.GetEntry(t.Context(), ID{"o", "p", "d", "contested"}); winner < 0 || err != nil || got.URI != fmt.Sprint("s3://b/writer-", winner) {
		t.Errorf("contested key: winner %d, stored %+v, %v", winner, got, err)
	}
	if got, err := s.GetEntry(t.Context(), ID{"o", "p", "d", "k3"}); !errors.Is(errs[23], ErrConflict) || err != nil || got.URI != "s3://b/3" {
		t.Errorf("existing key: put %v, stored %+v, %v; want ErrConflict and the old entry", errs[23], got, err)
	}
	if n := s.puts.batched.Load(); n != int64(len(puts)) {
		t.Errorf("%d Puts were served by a shared statement, want all %d", n, len(puts))
	}
}

// TestPutBatchMemberFailuresStayTheirOwn serves one batch holding a
// cancelled caller and a row PostgreSQL rejects (a NUL byte in the key):
// the statement fails as a whole, and every other caller is served alone
// with its own answer; the bad row gets exactly its error alone, and
// nothing of it is stored.
func TestPutBatchMemberFailuresStayTheirOwn(t *testing.T) {
	t.Parallel()
	s := oneConnStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	bad := Entry{ID: ID{"o", "p", "d", "bad\x00"}, URI: "s3://b/bad"}
	aloneErr := s.PutEntry(ctx, bad, Replace{})
	if aloneErr == nil || errors.Is(aloneErr, ErrConflict) {
		t.Fatalf("alone, the bad row gave %v; want PostgreSQL's refusal", aloneErr)
	}
	cancelled, cancelIt := context.WithTimeout(t.Context(), 30*time.Second)
	cancelIt()
	calls := []*pending[Entry, struct{}]{
		{ctx: cancelled, arg: Entry{ID: ID{"o", "p", "d", "c0"}, URI: "s3://b/c0"}},
		{ctx: ctx, arg: Entry{ID: ID{"o", "p", "d", "c1"}, URI: "s3://b/c1"}},
		{ctx: ctx, arg: Entry{ID: ID{"o", "p", "d", "k1"}, URI: "s3://b/again"}},
		{ctx: ctx, arg: bad},
	}
	for _, c := range calls {
		c.done = make(chan struct{})
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.puts.serve(conn, putOps, calls)
	conn.Release()
	await := func(i int) error { _, err := s.puts.await(s.pool, putOps, calls[i]); return err }
	if err := await(0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want its cancellation", err)
	}
	if err := await(1); err != nil {
		t.Errorf("c1: %v, want stored", err)
	}
	if err := await(2); !errors.Is(err, ErrConflict) {
		t.Errorf("existing k1: %v, want ErrConflict", err)
	}
	if err := await(3); err == nil || err.Error() != aloneErr.Error() {
		t.Errorf("bad row in a batch: %v, want %v as alone", err, aloneErr)
	}
	if e, err := s.GetEntry(ctx, ID{"o", "p", "d", "c1"}); err != nil || e.URI != "s3://b/c1" {
		t.Errorf("c1 stored %+v, %v", e, err)
	}
	if _, err := s.GetEntry(ctx, ID{"o", "p", "d", "c0"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("the cancelled caller's entry: %v, want none stored (it was never served alone)", err)
	}
}
