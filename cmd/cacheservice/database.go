package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/cacheservice/cacheservice/store"
)

// startupTimeout bounds starting the embedded PostgreSQL and migrating: a
// first start runs initdb, and migrations may wait for another replica's.
// Waiting for an external database to become reachable has its own bound,
// --db-connect-timeout, on top.
const startupTimeout = 2 * time.Minute

// errEmbeddedUnavailable is the one line a server started without a
// database URL prints where no PostgreSQL server binaries exist: in the
// container image (distroless, no PostgreSQL) above all, where installing
// them is not the answer, so the URL comes first.
var errEmbeddedUnavailable = errors.New("no database URL given, and the embedded PostgreSQL is not available in this build or image (no postgres and initdb binaries found): " +
	"pass --database-url (or CACHESERVICE_DATABASE_URL), or install PostgreSQL's server binaries (e.g. apt-get install postgresql)")

// embeddedSupervise is how often the embedded PostgreSQL is checked for
// reachability: a stat of its socket file, so cheap enough to do often.
const embeddedSupervise = time.Second

// database is the migrated store and, in embedded mode, the PostgreSQL
// server behind it.
type database struct {
	store    *store.Store
	kind     string             // "embedded" or "external", for the logs
	embedded *embeddedpg.Server // nil with --database-url
}

// openDatabase starts the embedded PostgreSQL when no URL is configured,
// opens the pool and applies the migrations.
func openDatabase(ctx context.Context, cfg Config, logger *slog.Logger) (_ *database, err error) {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout+cfg.DBConnectTimeout)
	defer cancel()
	db := &database{kind: "external"}
	defer func() {
		if err != nil {
			err = errors.Join(err, db.close(context.WithoutCancel(ctx), cfg.ShutdownTimeout))
		}
	}()

	storeCfg := cfg.Store
	if !cfg.embedded() {
		// No error may echo the operator's connection string: its password,
		// and its other parts too, since a malformed one has no reliable
		// boundary between them.
		url := storeCfg.URL
		defer func() {
			if err != nil {
				err = redact(err, url)
			}
		}()
	}
	if cfg.embedded() {
		db.kind = "embedded"
		// Fail first with the one line that says what to do.
		if _, err := embeddedpg.FindBinaries(); err != nil {
			return nil, errEmbeddedUnavailable
		}
		db.embedded, err = embeddedpg.Start(ctx, embeddedpg.Config{
			Dir:      cfg.DataDir,
			Database: embeddedpg.DefaultDatabase,
			Durable:  true,
			Logger:   logger.With(slog.String("component", "postgres")),
			// A lost socket file or a dead postmaster is noticed and
			// repaired within about this long.
			Supervise: embeddedSupervise,
		})
		if errors.Is(err, embeddedpg.ErrUnreachableDir) {
			return nil, fmt.Errorf("%w; pass %s a directory that user can reach, such as /var/lib/cacheservice, or open up that parent", err, opt("data-dir"))
		}
		if err != nil {
			return nil, err
		}
		storeCfg.URL = db.embedded.ConnString(embeddedpg.DefaultDatabase)
	}

	// Reach it first: an unreachable database is the common failure, and
	// its error is clearer than one from inside a migration. The embedded
	// one is up already, so it gets no retries.
	connectTimeout := cfg.DBConnectTimeout
	if cfg.embedded() {
		connectTimeout = 0
	}
	db.store, err = connectStore(ctx, storeCfg, connectTimeout, logger)
	if err != nil {
		return nil, err
	}
	// A test's clock offset left in a connection string or on the database
	// would move every lease this replica judges: refuse to start.
	if err := db.store.CheckClock(ctx); err != nil {
		return nil, fmt.Errorf("refusing to start: %w", err)
	}
	if err := db.store.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("migrate database: %w", err)
	}
	return db, nil
}

// redactedError is an error whose text has every part of a connection
// string blanked out; errors.Is and As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact blanks out of err's text every value of the connection string
// connString: password, user, database, hosts, ports and run-time
// parameters (names and values, which PostgreSQL quotes back when it
// rejects one). A string that does not parse never reaches an error (the
// store says only what is wrong with it), so its values need no finding.
func redact(err error, connString string) error {
	cfg, parseErr := pgconn.ParseConfig(connString)
	if parseErr != nil {
		return err
	}
	secrets := []string{connString, cfg.Password, cfg.User, cfg.Database, cfg.Host, strconv.Itoa(int(cfg.Port))}
	for _, fb := range cfg.Fallbacks {
		secrets = append(secrets, fb.Host, strconv.Itoa(int(fb.Port)))
	}
	for k, v := range cfg.RuntimeParams {
		secrets = append(secrets, k, v)
	}
	// Longest first, so a value inside another is not left half blanked.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return &redactedError{msg: msg, err: err}
}

// close closes the pool, then stops the embedded PostgreSQL (which would
// otherwise wait for the pool's connections), giving it timeout to finish.
func (db *database) close(ctx context.Context, timeout time.Duration) error {
	if db.store != nil {
		db.store.Close()
	}
	if db.embedded == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := db.embedded.Stop(ctx); err != nil {
		return fmt.Errorf("stop embedded postgresql: %w", err)
	}
	return nil
}
