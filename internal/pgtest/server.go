package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
)

// StartServer starts an embedded cluster that belongs to the calling test
// alone, stopped and removed at cleanup, for tests that stop and restart
// PostgreSQL while other tests run in parallel on the shared one. It takes
// about a second; connect with ConnString(embeddedpg.DefaultDatabase).
func StartServer(t testing.TB) *embeddedpg.Server {
	t.Helper()
	return StartServerWith(t, nil)
}

// StartServerWith is StartServer with extra postgres settings, such as a low
// max_connections.
func StartServerWith(t testing.TB, settings map[string]string) *embeddedpg.Server {
	t.Helper()
	// Under the cluster parent, not t.TempDir, whose private parent the
	// postgres user cannot enter.
	dir, err := os.MkdirTemp(clusterParent(), "pgtest-own-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	s, err := embeddedpg.Start(ctx, embeddedpg.Config{Dir: dir, Durable: false, Settings: settings})
	if err != nil {
		t.Fatalf("pgtest: start own cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("pgtest: stop own cluster: %v", err)
		}
	})
	return s
}
