package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/store"
)

// TestMigrateConcurrentlyAppliesEachMigrationOnce starts eight migrators
// on an empty schema at once, as replicas starting together would.
func TestMigrateConcurrentlyAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn, err := pgx.Connect(b.ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var want int
	if err := conn.QueryRow(b.ctx, "SELECT count(*) FROM schema_migrations").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(b.ctx, "DROP TABLE schema_migrations, cache_entries, reservations"); err != nil {
		t.Fatal(err)
	}

	start := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-start
			errs <- store.Migrate(b.ctx, b.url)
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	var got int
	if err := conn.QueryRow(b.ctx, "SELECT count(*) FROM schema_migrations").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want || want == 0 {
		t.Fatalf("schema_migrations has %d rows, want %d", got, want)
	}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: store.ID{"o", "p", "d", "k"}, URI: "u"}, store.Replace{}); err != nil {
		t.Fatalf("put after migrating: %v", err)
	}
}
