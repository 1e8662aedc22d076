package reliability

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

// TestMaxConnectionsServedByPooledConnections runs PostgreSQL with room for
// four sessions, takes two of them elsewhere, and sends 20 concurrent
// requests through a store whose pool holds the other two and may grow to
// eight. Every dial beyond two fails with "too many clients"; the requests
// must still all be served by the two pooled connections, in turn, rather
// than fail unavailable.
func TestMaxConnectionsServedByPooledConnections(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartServerWith(t, map[string]string{"max_connections": "4", "superuser_reserved_connections": "0"})
	url := pg.ConnString(embeddedpg.DefaultDatabase)
	if err := store.Migrate(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	for range 2 { // sessions of someone else
		c, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
	st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 8, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, "store's pool", st.Close) })
	// The pool keeps two connections open (its minimum): wait for them.
	for deadline := time.Now().Add(10 * time.Second); st.Pool().Stat().IdleConns() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pool did not open its two connections: %+v", st.Pool().Stat())
		}
	}
	if _, err := pgx.Connect(t.Context(), url); err == nil {
		t.Fatal("a fifth session connected: max_connections is not in force")
	}

	const requests = 20
	trials := pick(5, 50)
	for trial := range trials {
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, requests)
		for i := range requests {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				id := store.ID{Org: "o", Project: "p", Domain: "d", Key: fmt.Sprintf("k%d", i)}
				var err error
				if i%2 == 0 {
					err = st.PutEntry(ctx, store.Entry{ID: id, URI: "u", CreatedAt: time.Now(), LastUpdatedAt: time.Now()}, store.Replace{Always: true})
				} else if _, err = st.GetEntry(ctx, id); errors.Is(err, store.ErrNotFound) {
					err = nil
				}
				if err != nil {
					errs <- fmt.Errorf("trial %d request %d: %w", trial, i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d trials of %d concurrent requests served by %d pooled connections", trials, requests, st.Pool().Stat().TotalConns())
}
