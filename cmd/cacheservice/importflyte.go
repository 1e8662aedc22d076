package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cacheservice/cacheservice/internal/flyteimport"
	"github.com/cacheservice/cacheservice/internal/setting"
	"github.com/cacheservice/cacheservice/store"
)

// importDBTimeout is the import's default --db-timeout: one batch's write
// (1000 rows by default) rather than one Get, which serve's default is for.
const importDBTimeout = 30 * time.Second

// importConfig is what `cacheservice import-flyte` can be told.
type importConfig struct {
	// db says where our database is, as for serve.
	db Config
	// run is the import itself.
	run flyteimport.Config
	// progressEvery is the least time between two progress lines.
	progressEvery time.Duration
}

// parseImportConfig reads the import-flyte command's flags. Our database
// comes from --database-url or the same environment variables as serve's,
// else the embedded PostgreSQL in --data-dir.
func parseImportConfig(args []string, env lookupEnv, output io.Writer) (importConfig, error) {
	// Serve's defaults, so the database is found and stopped the same way;
	// the import needs two connections (one reads while one writes), and a
	// batch's write a longer deadline than one Get.
	cfg := importConfig{db: defaultConfig(), progressEvery: time.Second}
	cfg.db.Store.MaxConns = 2
	cfg.db.Store.Timeout = importDBTimeout
	fs := flag.NewFlagSet("cacheservice import-flyte", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var projects, domains string
	fs.StringVar(&cfg.run.From, "from", "", "connection `URL` of Flyte's cache service database (read only; required)")
	fs.StringVar(&cfg.db.Store.URL, "database-url", "", "our PostgreSQL connection `URL` (env CACHESERVICE_DATABASE_URL, else DATABASE_URL); empty uses the embedded PostgreSQL in --data-dir")
	fs.StringVar(&cfg.db.DataDir, "data-dir", cfg.db.DataDir, "`directory` of the embedded PostgreSQL, when no database URL is given (env CACHESERVICE_DATA_DIR)")
	fs.DurationVar(&cfg.db.Store.Timeout, "db-timeout", cfg.db.Store.Timeout, "deadline of each batch's write to our database")
	fs.StringVar(&cfg.run.Org, "org", "", "`org` of the rows whose metadata names none (Flyte dropped the org from its keys); without it such rows are skipped")
	fs.StringVar(&projects, "projects", "", "comma-separated `projects`: a key without metadata may only be read as naming one of these")
	fs.StringVar(&domains, "domains", "", "comma-separated `domains`: a key without metadata may only be read as naming one of these, such as development,staging,production")
	fs.IntVar(&cfg.run.BatchSize, "batch-size", 1000, "rows read and written at a time")
	fs.BoolVar(&cfg.run.DryRun, "dry-run", false, "read and check everything, write nothing, and say what would be imported")
	fs.StringVar(&cfg.run.StartAfter, "start-after", "", "resume after this Flyte `key`, the last one a progress line reported")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(output, importUsage)
			fs.SetOutput(output)
			fs.PrintDefaults()
		}
		return importConfig{}, err
	}
	if fs.NArg() > 0 {
		return importConfig{}, fmt.Errorf("unexpected argument %q: import-flyte takes flags only", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, f := range []struct{ flag, env string }{
		{"database-url", envName("database-url")}, {"database-url", "DATABASE_URL"}, {"data-dir", envName("data-dir")},
	} {
		if v, ok := env(f.env); ok && !given[f.flag] {
			_ = fs.Set(f.flag, v) // string flags accept anything
			given[f.flag] = true
		}
	}
	cfg.run.Projects, cfg.run.Domains = splitList(projects), splitList(domains)
	// The lock timeout is no flag here (the import claims nothing), but the
	// store's bounds tie it to --db-timeout, as serve keeps it.
	cfg.db.Store.LockTimeout = min(cfg.db.Store.LockTimeout, cfg.db.Store.Timeout/2)
	if err := cfg.db.Store.Validate(); err != nil {
		// Named as flags only: import-flyte reads no environment for them.
		if se, ok := errors.AsType[*setting.Error](err); ok {
			flag := func(field string) string { return storeFlags[field] }
			return importConfig{}, errors.New(se.Describe(func(field string) string { return "--" + flag(field) }, flag))
		}
		return importConfig{}, err
	}
	switch {
	case cfg.run.From == "":
		return importConfig{}, errors.New("--from is required: the connection URL of Flyte's cache service database")
	case cfg.run.BatchSize < 1 || cfg.run.BatchSize > 100_000:
		return importConfig{}, fmt.Errorf("--batch-size must be between 1 and 100000, got %d", cfg.run.BatchSize)
	case cfg.db.embedded() && cfg.db.DataDir == "":
		return importConfig{}, errors.New("--data-dir must not be empty when no database URL is given")
	}
	return cfg, nil
}

const importUsage = `Usage: cacheservice import-flyte --from FLYTE_DATABASE_URL [flags]

Copies the entries of Flyte's cache service database (its table
cache_service_outputs) into ours. Each entry's org, project and domain come
from its stored metadata, or from its key when that reads one way only; rows
that cannot be placed, or that our limits refuse, are listed and skipped.
Existing entries are never replaced, so the import can run again or resume.
Reservations are not imported: they expire in seconds.

Flags:
`

// splitList reads a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// importFlyteCommand runs `cacheservice import-flyte`: skipped rows and the
// summary go to stdout, progress lines to stderr.
func importFlyteCommand(ctx context.Context, args []string, env lookupEnv, stdout, stderr io.Writer) int {
	cfg, err := parseImportConfig(args, env, stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "cacheservice import-flyte: %v (see cacheservice import-flyte -help)\n", oneLine(err))
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	open := openDatabase
	if cfg.run.DryRun && !cfg.db.embedded() {
		open = openUnmigrated
	}
	db, err := open(ctx, cfg.db, logger)
	if err != nil {
		fmt.Fprintf(stderr, "cacheservice import-flyte: %v\n", oneLine(err))
		return exitFail
	}
	defer db.close(context.WithoutCancel(ctx), cfg.db.ShutdownTimeout) //nolint:errcheck // the embedded server's stop error has nowhere better to go

	var lastProgress time.Time
	hooks := flyteimport.Hooks{
		Skip: func(s flyteimport.Skipped) {
			fmt.Fprintf(stdout, "skipped %s %q: %s\n", s.Reason, s.Key, s.Detail)
		},
		Progress: func(s flyteimport.Summary) {
			if time.Since(lastProgress) < cfg.progressEvery {
				return
			}
			lastProgress = time.Now()
			fmt.Fprintf(stderr, "import-flyte: %d read, %d %s, %d already present, %d skipped; last key %q\n",
				s.Read, s.Imported, importedWord(s.DryRun), s.Present, s.SkippedTotal(), s.LastKey)
		},
	}
	sum, err := flyteimport.Run(ctx, db.store, cfg.run, hooks)
	printSummary(stdout, sum)
	if err != nil {
		fmt.Fprintf(stderr, "cacheservice import-flyte: %v\n", oneLine(err))
		if sum.LastKey != "" && sum.LastKey != cfg.run.StartAfter {
			fmt.Fprintf(stderr, "Every batch up to key %q is done: run again with --start-after %q to resume (running from the start is safe too: nothing is imported twice).\n",
				sum.LastKey, sum.LastKey)
		}
		return exitFail
	}
	return exitOK
}

// openUnmigrated opens an external database without applying migrations,
// so that a dry run changes nothing there, not even the schema: the import
// binary may be newer than the servers still running on that database.
func openUnmigrated(ctx context.Context, cfg Config, _ *slog.Logger) (*database, error) {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := st.Ping(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("reach database: %w", err)
	}
	return &database{store: st, kind: "external"}, nil
}

func importedWord(dryRun bool) string {
	if dryRun {
		return "to import"
	}
	return "imported"
}

// printSummary writes the counts, the skips by reason, and what happened to
// the reservations.
func printSummary(w io.Writer, s flyteimport.Summary) {
	title := "import-flyte"
	if s.DryRun {
		title += " (dry run: nothing written)"
	}
	rate := 0.0
	if secs := s.Elapsed.Seconds(); secs > 0 {
		rate = float64(s.Read) / secs
	}
	fmt.Fprintf(w, "%s: %d rows read in %s (%.0f rows/s)\n", title, s.Read, s.Elapsed.Round(time.Millisecond), rate)
	fmt.Fprintf(w, "  %-17s %d\n", importedWord(s.DryRun), s.Imported)
	fmt.Fprintf(w, "  %-17s %d\n", "already present", s.Present)
	fmt.Fprintf(w, "  %-17s %d\n", "skipped", s.SkippedTotal())
	for _, reason := range slices.Sorted(maps.Keys(s.Skipped)) {
		fmt.Fprintf(w, "    %-15s %d\n", reason, s.Skipped[reason])
	}
	if s.FromKeyOnly > 0 {
		fmt.Fprintf(w, "  %d of the entries had no metadata placing them, and were placed by their key alone\n", s.FromKeyOnly)
	}
	if s.NoSource > 0 {
		fmt.Fprintf(w, "  %d of the entries have no source identifier: Flyte's API answers them not_found, "+
			"and its non-overwriting Put of their keys already_exists, until Flyte overwrites them\n", s.NoSource)
	}
	switch {
	case s.Reservations < 0:
		fmt.Fprintln(w, "  reservations: none (no cache_service_reservations table)")
	default:
		fmt.Fprintf(w, "  reservations: %d not imported (they expire in seconds; running executors reserve again)\n", s.Reservations)
	}
}
