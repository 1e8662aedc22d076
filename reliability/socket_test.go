package reliability

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/metricstest"
)

// TestRemovedSocketIsRepaired removes the embedded PostgreSQL's socket file
// under a running server binary, as a tmp cleaner might. The up gauge must
// not claim the database is up while it cannot be reached, and the server's
// supervisor restarts PostgreSQL, after which it serves again with its data.
func TestRemovedSocketIsRepaired(t *testing.T) {
	t.Parallel()
	dir := postgresDir(t)
	srv := startServer(t, "embedded-socket", "--data-dir", dir)
	client := srv.connectClient()
	put := &cachev1.PutRequest{Scope: scope(), Key: "before", Output: uriOf("kept")}
	if _, err := client.Put(t.Context(), connect.NewRequest(put)); err != nil {
		t.Fatal(err)
	}
	metricsURL := srv.baseURL + "/metrics"
	if up := metricstest.Scrape(t, metricsURL).Get(t, "cacheservice_embedded_postgres_up"); up != 1 {
		t.Fatalf("embedded_postgres_up = %v before the removal, want 1", up)
	}

	if err := os.Remove(filepath.Join(dir, ".s.PGSQL.5432")); err != nil {
		t.Fatal(err)
	}
	s := metricstest.Scrape(t, metricsURL)
	if up, starts := s.Get(t, "cacheservice_embedded_postgres_up"), s.Get(t, "cacheservice_embedded_postgres_starts_total"); up == 1 && starts == 1 {
		t.Errorf("embedded_postgres_up = 1 with the socket gone and no restart yet")
	}

	// Pooled connections outlive the socket file, but no new one can be
	// made: the supervisor must restart PostgreSQL.
	deadline := time.Now().Add(time.Minute)
	for metricstest.Scrape(t, metricsURL).Get(t, "cacheservice_embedded_postgres_starts_total") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL not restarted a minute after its socket was removed:\n%s", srv.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Served again, by the restarted PostgreSQL.
	for {
		res, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "before"}))
		if err == nil {
			if res.Msg.GetOutput().GetUri() != "kept" {
				t.Fatalf("after the repair: %v", res.Msg)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not serving a minute after the socket was removed: %v\n%s", err, srv.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s = metricstest.Scrape(t, metricsURL)
	if up, starts := s.Get(t, "cacheservice_embedded_postgres_up"), s.Get(t, "cacheservice_embedded_postgres_starts_total"); up != 1 || starts != 2 {
		t.Errorf("after the repair: up = %v, starts = %v; want 1 and 2", up, starts)
	}
	if errs := srv.logsAt("ERROR"); len(errs) > 0 {
		t.Errorf("the repair logged errors: %v", errs)
	}
}
