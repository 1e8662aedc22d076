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

// t0 is the tests' clock; they move time by passing later instants.
var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type testBundle struct {
	ctx     context.Context
	manager *manager.Manager
	cfg     manager.Config
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return setupWith(t, manager.DefaultConfig())
}

func setupWith(t *testing.T, cfg manager.Config) *testBundle {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{URL: pgtest.NewDatabase(t), MaxConns: 70, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	return &testBundle{ctx: t.Context(), manager: manager.New(st, cfg, nil), cfg: cfg}
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
