// Package pgtest gives tests a real PostgreSQL: one throwaway embedded cluster per test binary (or
// the server named by CACHESERVICE_TEST_DATABASE_URL), a template database prepared once, and a
// fresh clone of it for each test that asks, whose clock a test can move (SetClockOffset,
// WithClockOffset). It is for tests only: production code must not import it, and it must not
// know the schema (the prepare function passed to Main does) beyond the name of the clock's
// test setting.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// URLEnv names an external server to use instead of an embedded cluster. Several test binaries
// may share one: every database pgtest creates has a unique name.
const URLEnv = "CACHESERVICE_TEST_DATABASE_URL"

// logEnv, when set, forwards the embedded cluster's whole log to stderr (warnings only otherwise).
const logEnv = "CACHESERVICE_TEST_POSTGRES_LOG"

// setupTimeout bounds starting the cluster and preparing the template.
const setupTimeout = 2 * time.Minute

// harness is what Main sets up for NewDatabase. It has to be package state: testing.M gives the
// tests no other way to reach it.
type harness struct {
	adminURL string             // a database to run CREATE/DROP DATABASE from
	template string             // the prepared database every test database is cloned from
	server   *embeddedpg.Server // nil with an external server
	dir      string             // the embedded cluster's directory, removed at the end

	// cloneMu serializes clones: PostgreSQL refuses to copy a template while another session is
	// connected to it, and serial clones never contend on it.
	cloneMu sync.Mutex
}

var (
	current *harness
	dbSeq   atomic.Int64
)

// Main starts one throwaway embedded cluster for the test binary (or uses
// CACHESERVICE_TEST_DATABASE_URL when set), builds a template database by calling prepare(ctx,
// connString) once (e.g. to run migrations), runs the tests, then stops the cluster. Call from
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, store.Migrate)) }
//
// prepare must close its connections before returning. A nil prepare leaves the template empty.
func Main(m *testing.M, prepare func(ctx context.Context, connString string) error) int {
	h, err := setUp(prepare)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	current = h
	code := m.Run()
	if err := h.tearDown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// NewDatabase creates a fresh database cloned from the template (CREATE DATABASE ... TEMPLATE
// ...), registers t.Cleanup to drop it (WITH (FORCE)), and returns its connection string.
func NewDatabase(t testing.TB) string {
	t.Helper()
	h := current
	if h == nil {
		t.Fatal("pgtest: NewDatabase needs TestMain to call pgtest.Main")
	}
	name := uniqueName(fmt.Sprintf("pgtest_%d", dbSeq.Add(1)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.clone(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.drop(ctx, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return withDatabase(h.adminURL, name)
}

func setUp(prepare func(ctx context.Context, connString string) error) (_ *harness, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	h := &harness{template: uniqueName("pgtest_template")}
	defer func() {
		if err != nil {
			_ = h.tearDown()
		}
	}()

	if h.adminURL = os.Getenv(URLEnv); h.adminURL == "" {
		if err := h.startCluster(ctx); err != nil {
			return nil, err
		}
	}
	if err := h.exec(ctx, "CREATE DATABASE "+ident(h.template)); err != nil {
		return nil, fmt.Errorf("create template database: %w", err)
	}
	if prepare != nil {
		if err := prepare(ctx, withDatabase(h.adminURL, h.template)); err != nil {
			return nil, fmt.Errorf("prepare template database: %w", err)
		}
	}
	// A clone fails while anyone is connected to the template: end any session prepare left
	// behind (only ours can be there, the name is unique) and refuse new ones.
	if err := h.exec(ctx, "ALTER DATABASE "+ident(h.template)+" ALLOW_CONNECTIONS false"); err != nil {
		return nil, fmt.Errorf("close template database to connections: %w", err)
	}
	if err := h.exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", h.template); err != nil {
		return nil, fmt.Errorf("disconnect sessions from template database: %w", err)
	}
	return h, nil
}

// startCluster starts the embedded cluster, tuned for throwaway data.
func (h *harness) startCluster(ctx context.Context) error {
	dir, err := os.MkdirTemp(clusterParent(), "pgtest-")
	if err != nil {
		return fmt.Errorf("create directory for test cluster: %w", err)
	}
	h.dir = dir
	level := slog.LevelWarn
	if os.Getenv(logEnv) != "" {
		level = slog.LevelDebug
	}
	h.server, err = embeddedpg.Start(ctx, embeddedpg.Config{
		Dir:      dir,
		Database: "postgres", // exists already: clones are all the tests need
		Durable:  false,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		// Room for many parallel tests, each with its own pool.
		Settings: map[string]string{"max_connections": "300"},
	})
	if err != nil {
		return fmt.Errorf("start test cluster: %w", err)
	}
	h.adminURL = h.server.ConnString("postgres")
	return nil
}

// clusterParent picks where the throwaway cluster lives: /dev/shm when it is a roomy tmpfs, since
// a clone creates some 300 files and is about ten times faster off the disk (20ms against 230ms
// measured), else the system temp dir. The postgres user can reach both.
func clusterParent() string {
	const shm, tmpfsMagic, minFree = "/dev/shm", 0x01021994, 1 << 30
	var st syscall.Statfs_t
	if err := syscall.Statfs(shm, &st); err == nil && st.Type == tmpfsMagic && st.Bavail*uint64(st.Bsize) >= minFree {
		return shm
	}
	return os.TempDir()
}

func (h *harness) clone(ctx context.Context, name string) error {
	h.cloneMu.Lock()
	defer h.cloneMu.Unlock()
	if err := h.exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(h.template)); err != nil {
		return fmt.Errorf("create test database %s: %w", name, err)
	}
	return nil
}

func (h *harness) drop(ctx context.Context, name string) error {
	if err := h.exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement on a connection of its own, so a test that restarted the server
// leaves nothing stale behind.
func (h *harness) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// tearDown drops the template and stops and removes the embedded cluster.
func (h *harness) tearDown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []string
	if h.adminURL != "" && h.server == nil {
		// Only an external server needs its template dropped; the embedded one is deleted whole.
		if err := h.drop(ctx, h.template); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if h.server != nil {
		if err := h.server.Stop(ctx); err != nil {
			errs = append(errs, fmt.Sprintf("stop test cluster: %v", err))
		}
	}
	if h.dir != "" {
		if err := os.RemoveAll(h.dir); err != nil {
			errs = append(errs, fmt.Sprintf("remove test cluster: %v", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("tear down: %s", strings.Join(errs, "; "))
	}
	return nil
}

// uniqueName appends a random suffix, so test binaries sharing one server never collide.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s_%08x", prefix, rand.Uint32())
}

func ident(name string) string {
	return pgx.Identifier{name}.Sanitize()
}

// withDatabase returns connString pointing at database instead, for URL and keyword/value forms.
func withDatabase(connString, database string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		if u, err := url.Parse(connString); err == nil {
			u.Path, u.RawPath = "/"+database, ""
			return u.String()
		}
	}
	// A later keyword overrides an earlier one; our names need no quoting.
	return connString + " dbname=" + database
}

// ClockOffsetSetting is the session setting that the schema's clock function adds to the
// database's clock (store/migrations/003_cache_now.sql). Only tests set it: they move time this
// way instead of sleeping or passing times in.
const ClockOffsetSetting = "cacheservice.clock_offset"

// WithClockOffset returns connString for sessions whose clock runs d ahead of the database's
// (behind, when d is negative), sent as a startup parameter: a replica whose view of time is
// skewed, or a pool a test opens after moving time. It wins over SetClockOffset.
func WithClockOffset(connString string, d time.Duration) string {
	value := offsetValue(d)
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		if u, err := url.Parse(connString); err == nil {
			q := u.Query()
			q.Set(ClockOffsetSetting, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return connString + " " + ClockOffsetSetting + "=" + value
}

// SetClockOffset makes the clock of every new session of connString's database run d ahead of
// the database's (ALTER DATABASE ... SET; offsets replace, they do not add up), then resets
// pools so that their connections reconnect and see it. Call it between operations: a pool's
// connection in use is replaced only when it is released.
func SetClockOffset(t testing.TB, connString string, d time.Duration, pools ...*pgxpool.Pool) {
	t.Helper()
	h := current
	if h == nil {
		t.Fatal("pgtest: SetClockOffset needs TestMain to call pgtest.Main")
	}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatalf("pgtest: parse connection string: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// ALTER DATABASE takes no parameters; the value is ours and needs no quoting beyond this.
	sql := fmt.Sprintf("ALTER DATABASE %s SET %s = '%s'", ident(cfg.Database), ClockOffsetSetting, offsetValue(d))
	if err := h.exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: set clock offset: %v", err)
	}
	for _, p := range pools {
		p.Reset()
	}
}

// offsetValue spells d as an interval PostgreSQL reads back to the microsecond.
func offsetValue(d time.Duration) string {
	return fmt.Sprintf("%dus", d.Microseconds())
}

// Clock is the database's clock, cache_now(), as the sessions of one pool over the database at
// URL see it: what a test moves instead of sleeping, and reads to bound a timestamp.
type Clock struct {
	URL  string
	Pool *pgxpool.Pool
}

// Shift moves the clock to d ahead of the database's (behind, when d is negative) for Pool's
// connections and every new session; see SetClockOffset.
func (c Clock) Shift(t testing.TB, d time.Duration) {
	t.Helper()
	SetClockOffset(t, c.URL, d, c.Pool)
}

// Now reads the clock as Pool's connections see it.
func (c Clock) Now(t testing.TB) time.Time {
	t.Helper()
	return Now(t, c.Pool)
}

// Now reads cache_now() through pool, in UTC.
func Now(t testing.TB, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	if err := pool.QueryRow(context.Background(), "SELECT cache_now()").Scan(&now); err != nil {
		t.Fatalf("pgtest: read the database's clock: %v", err)
	}
	return now.UTC()
}
