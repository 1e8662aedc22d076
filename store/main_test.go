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
	clock pgtest.Clock // the database's clock, as the store's connections see it
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
	return &testBundle{ctx: ctx, store: st, url: url, clock: pgtest.Clock{URL: url, Pool: st.Pool()}}
}
