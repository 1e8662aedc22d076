package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, createSchema))
}

// createSchema stands in for the store's migrations.
func createSchema(ctx context.Context, connString string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE widgets (name text PRIMARY KEY); INSERT INTO widgets VALUES ('seed')`)
	return err
}

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func widgets(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, _ := conn.Query(t.Context(), "SELECT name FROM widgets ORDER BY name")
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestNewDatabaseIsIsolatedAndPrepared(t *testing.T) {
	began := time.Now()
	a := connect(t, pgtest.NewDatabase(t))
	t.Logf("first NewDatabase took %v", time.Since(began))
	began = time.Now()
	b := connect(t, pgtest.NewDatabase(t))
	t.Logf("second NewDatabase took %v", time.Since(began))

	if _, err := a.Exec(t.Context(), "INSERT INTO widgets VALUES ('only-in-a')"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(widgets(t, a)); got != "[only-in-a seed]" {
		t.Errorf("database a holds %s", got)
	}
	if got := fmt.Sprint(widgets(t, b)); got != "[seed]" {
		t.Errorf("database b holds %s, want only the prepared row", got)
	}
}

func TestNewDatabaseUnderParallelTests(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.NewDatabase(t))
			if got := fmt.Sprint(widgets(t, conn)); got != "[seed]" {
				t.Errorf("got %s", got)
			}
		})
	}
}

func TestNewDatabaseIsDroppedAtCleanup(t *testing.T) {
	var connString string
	t.Run("uses", func(t *testing.T) {
		connString = pgtest.NewDatabase(t)
		connect(t, connString) // left open: the drop must force it closed
	})
	_, err := pgx.Connect(t.Context(), connString)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "3D000" {
		t.Fatalf("connect after cleanup: got %v, want invalid_catalog_name (3D000)", err)
	}
}

func BenchmarkNewDatabase(b *testing.B) {
	var mu sync.Mutex
	for b.Loop() {
		mu.Lock()
		pgtest.NewDatabase(b)
		mu.Unlock()
	}
}

// TestClockOffsetReachesSessions checks that both ways of moving the clock
// reach a session's setting, in both forms of connection string, and that a
// connection string's offset wins over the database's.
func TestClockOffsetReachesSessions(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	setting := func(connString string) string {
		t.Helper()
		var v string
		if err := connect(t, connString).QueryRow(t.Context(), "SELECT coalesce(current_setting($1, true), '')", pgtest.ClockOffsetSetting).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := setting(url); got != "" {
		t.Fatalf("a new database's sessions have offset %q, want none", got)
	}
	pgtest.SetClockOffset(t, url, 90*time.Minute)
	if got := setting(url); got != "5400000000us" {
		t.Errorf("after SetClockOffset: %q, want 5400000000us", got)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	// The same database as a URL; the host goes in the query, where a unix
	// socket directory may go too.
	u := neturl.URL{Scheme: "postgres", User: neturl.UserPassword(cfg.User, cfg.Password), Host: fmt.Sprintf("localhost:%d", cfg.Port), Path: "/" + cfg.Database,
		RawQuery: neturl.Values{"host": {cfg.Host}, "sslmode": {"disable"}}.Encode()}
	asURL := u.String()
	for _, cs := range []string{url, asURL} {
		if got := setting(pgtest.WithClockOffset(cs, -time.Second)); got != "-1000000us" {
			t.Errorf("WithClockOffset on %q: %q, want -1000000us, over the database's", cs, got)
		}
	}
}
