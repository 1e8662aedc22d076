package embeddedpg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// helperDirEnv makes TestHelperStartAndWait, run in a child test binary, start a cluster there.
const helperDirEnv = "EMBEDDEDPG_TEST_HELPER_DIR"

// newDir returns a fresh directory under the system temp dir, which (unlike t.TempDir's private
// parent) the postgres user can reach.
func newDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "embeddedpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start starts a cluster in dir and stops it at cleanup.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, s *Server, database string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), s.ConnString(database))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestStartKeepsDataAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	began := time.Now()
	s := start(t, Config{Dir: dir, Durable: true})
	t.Logf("first start (initdb, durable) took %v", time.Since(began))

	conn := connect(t, s, DefaultDatabase)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(t.Context())
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := pgx.Connect(t.Context(), s.ConnString(DefaultDatabase)); err == nil {
		t.Fatal("connected to a stopped cluster")
	}

	began = time.Now()
	s = start(t, Config{Dir: dir, Durable: true})
	t.Logf("second start (existing cluster) took %v", time.Since(began))
	var v string
	if err := connect(t, s, DefaultDatabase).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "hello" {
		t.Fatalf("got %q, want %q", v, "hello")
	}
}

func TestStartListensOnlyOnUnixSocket(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	began := time.Now()
	s := start(t, Config{Dir: dir, Database: "other"})
	t.Logf("first start (initdb, not durable) took %v", time.Since(began))

	conn := connect(t, s, "other")
	var listen, fsync string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting('listen_addresses'), current_setting('fsync')").Scan(&listen, &fsync); err != nil {
		t.Fatal(err)
	}
	if listen != "" {
		t.Errorf("listen_addresses = %q, want empty", listen)
	}
	if fsync != "off" {
		t.Errorf("fsync = %q, want off for a non-durable cluster", fsync)
	}
	if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL.5432")); err != nil {
		t.Errorf("socket not in Dir: %v", err)
	}
	if want := "host=" + dir + " port=5432 user=postgres dbname=other sslmode=disable"; s.ConnString("other") != want {
		t.Errorf("ConnString = %q, want %q", s.ConnString("other"), want)
	}
}

func TestRestartKeepsConnString(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Dir: initializedDir(t)})
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, s, DefaultDatabase).Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestFindBinariesFindsInstalledServer(t *testing.T) {
	t.Parallel()
	dir, err := FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if !hasServerBinaries(dir) {
		t.Fatalf("%s lacks postgres or initdb", dir)
	}
	t.Logf("found %s", dir)
	// On this project's machines PostgreSQL 15 is installed the Debian way (possibly symlinked
	// onto PATH); a different server on PATH would rightly win.
	want := "/usr/lib/postgresql/15/bin"
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			want = filepath.Dir(real)
		}
	}
	if hasServerBinaries(want) && dir != want {
		t.Errorf("FindBinaries = %s, want %s", dir, want)
	}
}

func TestFindBinariesPrefersNewestVersion(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, v := range []string{"9.6", "16", "10", "17"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if v == "17" {
			continue // a client-only install: no server binaries
		}
		for _, name := range []string{"postgres", "initdb"} {
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	got, err := findBinaries(notFound, filepath.Join(root, "*", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "16", "bin"); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestFindBinariesErrorSaysWhatToInstall(t *testing.T) {
	t.Parallel()
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	_, err := findBinaries(notFound, filepath.Join(t.TempDir(), "*", "bin"))
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("got %v, want ErrNoBinaries", err)
	}
	msg := err.Error()
	for _, want := range []string{"apt-get install postgresql", "--database-url"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message %q is not one line", msg)
	}
}

func TestStartRejectsLongSocketPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(os.TempDir(), strings.Repeat("d", 100))
	_, err := Start(t.Context(), Config{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "107-byte") {
		t.Fatalf("got %v, want an error naming the 107-byte limit", err)
	}
	if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("Start created %s before failing", dir)
	}
}

func TestStartRejectsDirPostgresCannotReach(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another user")
	}
	parent := newDir(t)
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Config{Dir: filepath.Join(parent, "db")})
	if err == nil || !strings.Contains(err.Error(), "cannot enter "+parent) {
		t.Fatalf("got %v, want an error naming %s", err, parent)
	}
}

// TestPostgresDiesWithParent kills a process running an embedded cluster with SIGKILL, which
// leaves it no chance to clean up, and checks the postmaster shuts itself down with the data kept.
func TestPostgresDiesWithParent(t *testing.T) {
	t.Parallel()
	dir := initializedDir(t)
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndWait$", "-test.v")
	helper.Env = append(os.Environ(), helperDirEnv+"="+dir)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	pidLine := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "postgres-pid="); ok {
				pid, _ := strconv.Atoi(v)
				pidLine <- pid
			}
		}
		close(pidLine)
	}()
	var pid int
	select {
	case pid = <-pidLine:
	case <-time.After(time.Minute):
		_ = helper.Process.Kill()
		t.Fatal("helper did not report a postgres pid")
	}
	if pid <= 0 {
		_ = helper.Process.Kill()
		t.Fatal("helper exited without starting postgres")
	}
	if !processRunning(pid) {
		t.Fatalf("postgres pid %d is not running", pid)
	}

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	killed := time.Now()
	for processRunning(pid) {
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("postgres pid %d still running 15s after its parent was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("postgres exited %v after its parent was killed", time.Since(killed))

	s := start(t, Config{Dir: dir})
	var v string
	if err := connect(t, s, DefaultDatabase).QueryRow(t.Context(), "SELECT v FROM survived").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "yes" {
		t.Fatalf("got %q, want %q", v, "yes")
	}
}

// TestHelperStartAndWait is not a test: TestPostgresDiesWithParent runs it in a child process,
// which starts a cluster, writes a row, prints the postmaster's pid and waits to be killed.
func TestHelperStartAndWait(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestPostgresDiesWithParent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, s.ConnString(DefaultDatabase))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE survived (v text); INSERT INTO survived VALUES ('yes')"); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("postgres-pid=%d\n", s.Pid())
	time.Sleep(time.Hour)
}

func TestWaitForOldPostmasterWaitsForLiveOne(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	old := exec.Command("sleep", "1")
	old.Dir = dataDir // a postmaster runs in its data directory
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = old.Wait() }()
	writePid(t, dataDir, old.Process.Pid)

	began := time.Now()
	if err := waitForOldPostmaster(t.Context(), dataDir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < 500*time.Millisecond {
		t.Errorf("returned after %v, before the old process exited", waited)
	}
}

func TestWaitForOldPostmasterIgnoresReusedPid(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	other := exec.Command("sleep", "10")
	other.Dir = t.TempDir() // not the data directory: some unrelated process that got the pid
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	writePid(t, dataDir, other.Process.Pid)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := waitForOldPostmaster(ctx, dataDir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}

func writePid(t *testing.T, dataDir string, pid int) {
	t.Helper()
	content := fmt.Sprintf("%d\n%s\n", pid, dataDir)
	if err := os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLevelOf(t *testing.T) {
	t.Parallel()
	for line, want := range map[string]slog.Level{
		"LOG:  database system is ready to accept connections":        slog.LevelDebug,
		"ERROR:  duplicate key value violates unique constraint":      slog.LevelDebug,
		"WARNING:  worker took too long":                              slog.LevelWarn,
		"FATAL:  role \"x\" does not exist":                           slog.LevelWarn,
		"FATAL:  terminating connection due to administrator command": slog.LevelDebug,
		"PANIC:  could not write to file":                             slog.LevelError,
		"\tfollowed by a continuation line":                           slog.LevelDebug,
		"FATAL:  the database system is starting up":                  slog.LevelDebug,
		"WARNING:  there is no transaction in progress":               slog.LevelWarn,
		"DETAIL:  Key (id)=(1) already exists.":                       slog.LevelDebug,
	} {
		if got := levelOf(line); got != want {
			t.Errorf("levelOf(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestConnStringQuotesOddPaths(t *testing.T) {
	t.Parallel()
	s := &Server{sockDir: `/tmp/a b'c\d`}
	cfg, err := pgconn.ParseConfig(s.ConnString("my db"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != s.sockDir || cfg.Database != "my db" || cfg.Port != 5432 || cfg.User != "postgres" {
		t.Errorf("parsed host=%q database=%q port=%d user=%q", cfg.Host, cfg.Database, cfg.Port, cfg.User)
	}
}

func TestStopForcesShutdownWhenContextEnds(t *testing.T) {
	t.Parallel()
	dir := initializedDir(t)
	s := start(t, Config{Dir: dir})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Stop(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop: got %v, want nil or context.Canceled", err)
	}
	if processRunning(s.Pid()) {
		t.Fatalf("postgres pid %d still running after Stop", s.Pid())
	}
	// An immediate shutdown leaves a cluster that recovers on the next start.
	if err := connect(t, start(t, Config{Dir: dir}), DefaultDatabase).Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// ping connects to s's default database once.
func ping(t *testing.T, s *Server) error {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), s.ConnString(DefaultDatabase))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(t.Context())
}
