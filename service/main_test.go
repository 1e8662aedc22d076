package service_test

import (
	"os"
	"testing"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, store.Migrate))
}

// openStore opens a store on a fresh test database, closed at cleanup.
func openStore(tb testing.TB) *store.Store {
	tb.Helper()
	st, err := store.Open(tb.Context(), store.Config{URL: pgtest.NewDatabase(tb), MaxConns: 2})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	return st
}
