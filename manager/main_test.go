package manager_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, store.Migrate))
}

type testBundle struct {
	ctx     context.Context
	manager *manager.Manager
	cfg     manager.Config
	store   *store.Store
	url     string
	clock   pgtest.Clock // the database's clock, as the manager's connections see it
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return setupWith(t, manager.DefaultConfig())
}

func setupWith(t *testing.T, cfg manager.Config) *testBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 70, Timeout: 30 * time.Second, LockTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	return &testBundle{ctx: t.Context(), manager: manager.New(st, cfg, nil), cfg: cfg, store: st, url: url, clock: pgtest.Clock{URL: url, Pool: st.Pool()}}
}

// wantBetween fails unless got lies in [from, to] after from is truncated to
// PostgreSQL's microseconds.
func wantBetween(t *testing.T, what string, got, from, to time.Time) {
	t.Helper()
	if got.Before(from.Truncate(time.Microsecond)) || got.After(to) {
		t.Errorf("%s = %v, want between %v and %v", what, got, from, to)
	}
}

func scope() *cachev1.Scope {
	return &cachev1.Scope{Org: "org", Project: "project", Domain: "development"}
}

func uriOutput(uri string) *cachev1.CachedOutput {
	return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: uri}}
}

// wantCode fails the test unless err carries code.
func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err %T is not a *connect.Error", err)
	}
}
