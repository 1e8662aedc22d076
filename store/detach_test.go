package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

// TestCallerWhoLeavesThePoolQueueNeverReachesTheDatabase fills a pool of
// one connection, has 8 callers put entries and give up while they wait for
// it, then frees the connection: none of the 8 writes happens. (They used
// to stay queued for the pool after their callers had gone, ahead of live
// callers, so a storm of cancelled calls starved the calls that stayed.)
func TestCallerWhoLeavesThePoolQueueNeverReachesTheDatabase(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.Context(), store.Config{URL: pgtest.NewDatabase(t), MaxConns: 1, Timeout: time.Minute, LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	held, err := st.Pool().Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const callers = 8
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			errs[i] = st.PutEntry(ctx, store.Entry{ID: store.ID{"o", "p", "d", fmt.Sprint("left-", i)}, URI: "s3://left"}, store.Replace{})
		})
	}
	wg.Wait()
	held.Release()
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("caller %d, who gave up in the pool's queue: %v, want its deadline", i, err)
		}
	}
	// The pool serves waiters in order, so a caller still queued would be
	// served before this one.
	if err := st.PutEntry(t.Context(), store.Entry{ID: store.ID{"o", "p", "d", "stayed"}, URI: "s3://stayed"}, store.Replace{}); err != nil {
		t.Fatalf("put by a caller who stayed: %v", err)
	}
	for i := range callers {
		if _, err := st.GetEntry(t.Context(), store.ID{"o", "p", "d", fmt.Sprint("left-", i)}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("entry of caller %d, who left before it had a connection: %v, want ErrNotFound", i, err)
		}
	}
}
