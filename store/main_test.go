package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, store.Migrate))
}

type testBundle struct {
	ctx   context.Context
	store *store.Store
	url   string
}

// setup gives each test its own migrated database and a store over it.
func setup(t *testing.T) *testBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 16, Timeout: 10 * time.Second, LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	return &testBundle{ctx: ctx, store: st, url: url}
}

// shiftClock moves the database's clock, as cache_now() reads it, to d
// ahead of real time for the store's connections.
func (b *testBundle) shiftClock(t *testing.T, d time.Duration) {
	t.Helper()
	pgtest.SetClockOffset(t, b.url, d, b.store.Pool())
}

// now reads the database's clock as the store's connections see it.
func (b *testBundle) now(t *testing.T) time.Time {
	t.Helper()
	var now time.Time
	if err := b.store.Pool().QueryRow(b.ctx, "SELECT cache_now()").Scan(&now); err != nil {
		t.Fatalf("read the clock: %v", err)
	}
	return now.UTC()
}
