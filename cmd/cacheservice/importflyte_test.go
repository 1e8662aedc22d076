package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/internal/flyteimport"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// emptyDatabase creates a database with no schema at all beside a test
// database (pgtest's clones carry ours), drops it at cleanup, and returns its
// connection string.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	admin := pgtest.NewDatabase(t)
	name := fmt.Sprintf("flyteimport_%08x", rand.Uint32())
	exec := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	return admin + " dbname=" + name // a later keyword wins
}

// flyteDatabase is an empty database laid out as Flyte's cache service
// migration lays it out, holding two rows and a reservation: one row placed
// by its metadata, one that no metadata places and whose key reads several
// ways.
func flyteDatabase(t *testing.T) string {
	t.Helper()
	url := emptyDatabase(t)
	schema, err := os.ReadFile("../../internal/flyteimport/testdata/flyte_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	md, err := proto.Marshal(&flytecache.Metadata{SourceIdentifier: &flytecore.Identifier{
		ResourceType: flytecore.ResourceType_TASK, Org: "acme", Project: "flytesnacks", Domain: "development", Name: "wf.t", Version: "v1",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), string(schema)); err != nil {
		t.Fatalf("create Flyte's schema: %v", err)
	}
	if _, err := conn.Exec(t.Context(), `
		INSERT INTO cache_service_outputs (key, output_uri, metadata, last_updated)
		VALUES ('flytesnacks-development-h1-h2', 's3://b/o1', $1, now()),
		       ('a-b-c-d', 's3://b/o2', NULL, now())`, md); err != nil {
		t.Fatalf("insert rows: %v", err)
	}
	if _, err := conn.Exec(t.Context(), `
		INSERT INTO cache_service_reservations (key, owner_id, expires_at)
		VALUES ('reservation:flytesnacks-development-h3', 'w', now() + interval '30 seconds')`); err != nil {
		t.Fatalf("insert reservation: %v", err)
	}
	return url
}

func runImport(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli(t.Context(), append([]string{"import-flyte"}, args...), noEnv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestImportFlyteCommandImportsReportsAndRerunsIdempotently(t *testing.T) {
	t.Parallel()
	src, dst := flyteDatabase(t), pgtest.NewDatabase(t)
	code, out, errOut := runImport(t, "--from", src, "--database-url", dst)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, errOut)
	}
	t.Logf("stdout:\n%s", out)
	for _, want := range []string{
		`skipped ambiguous_key "a-b-c-d": no metadata`,
		"import-flyte: 2 rows read",
		"imported          1",
		"already present   0",
		"ambiguous_key   1",
		"reservations: 1 not imported (they expire in seconds",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, `import-flyte: 2 read, 1 imported, 0 already present, 1 skipped; last key "flytesnacks-development-h1-h2"`) {
		t.Errorf("stderr lacks the progress line:\n%s", errOut)
	}
	code, out, errOut = runImport(t, "--from", src, "--database-url", dst)
	if code != exitOK || !strings.Contains(out, "imported          0") || !strings.Contains(out, "already present   1") {
		t.Errorf("re-run: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestImportFlyteCommandDryRunLeavesOurDatabaseUntouched(t *testing.T) {
	t.Parallel()
	src := flyteDatabase(t)
	dst := emptyDatabase(t) // not even migrated: a dry run must not migrate it
	code, out, errOut := runImport(t, "--from", src, "--database-url", dst, "--dry-run")
	if code != exitOK || !strings.Contains(out, "(dry run: nothing written)") || !strings.Contains(out, "to import         1") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	conn, err := pgx.Connect(t.Context(), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var tables int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("the dry run created %d tables in our database", tables)
	}
}

func TestImportFlyteCommandUsageErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--from is required"},
		{[]string{"--from", "postgres://x", "--batch-size", "0"}, "--batch-size must be between 1 and 100000"},
		{[]string{"--from", "postgres://x", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, errOut := runImport(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("import-flyte %q: exit %d, stderr %q; want exit 2 naming %q", c.args, code, errOut, c.want)
		}
	}
}

func TestImportFlyteCommandRefusesADatabaseThatIsNotFlytes(t *testing.T) {
	t.Parallel()
	code, _, errOut := runImport(t, "--from", pgtest.NewDatabase(t), "--database-url", pgtest.NewDatabase(t))
	if code != exitFail || !strings.Contains(errOut, "no cache_service_outputs table") {
		t.Fatalf("exit %d, stderr %q; want exit 1 saying it is not Flyte's database", code, errOut)
	}
}

// TestImportFlyteSummaryCountsRowsWithoutSource: imported rows without a
// source identifier are misses for Flyte's API that still block its
// non-overwriting Puts; the summary counts them apart.
func TestImportFlyteSummaryCountsRowsWithoutSource(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printSummary(&out, flyteimport.Summary{Read: 3, Imported: 3, NoSource: 2})
	if want := "2 of the entries have no source identifier: Flyte's API answers them not_found"; !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
	out.Reset()
	printSummary(&out, flyteimport.Summary{Read: 3, Imported: 3})
	if strings.Contains(out.String(), "no source identifier") {
		t.Errorf("summary mentions rows without source when there are none:\n%s", out.String())
	}
}

// TestImportFlyteConfigUsesServesDefaultsAndBounds: import-flyte finds and
// stops our database as serve does, and its --db-timeout has the store's
// bounds.
func TestImportFlyteConfigUsesServesDefaultsAndBounds(t *testing.T) {
	t.Parallel()
	cfg, err := parseImportConfig([]string{"--from", "postgres://x"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	def := defaultConfig()
	if cfg.db.DataDir != def.DataDir || cfg.db.ShutdownTimeout != def.ShutdownTimeout {
		t.Errorf("data dir %q, shutdown timeout %v; want serve's %q and %v", cfg.db.DataDir, cfg.db.ShutdownTimeout, def.DataDir, def.ShutdownTimeout)
	}
	if err := cfg.db.Store.Validate(); err != nil {
		t.Errorf("default store config is invalid: %v", err)
	}
	for _, bad := range []string{"10h", "0s", "-1s"} {
		_, err := parseImportConfig([]string{"--from", "postgres://x", "--db-timeout", bad}, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--db-timeout") {
			t.Errorf("--db-timeout %s: err = %v; want it refused by name", bad, err)
		}
	}
	if _, err := parseImportConfig([]string{"--from", "postgres://x", "--db-timeout", "100ms"}, noEnv, io.Discard); err != nil {
		t.Errorf("--db-timeout 100ms: %v", err)
	}
}
