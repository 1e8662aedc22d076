package flyteimport

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/store"
)

// flyteRow is one row of Flyte's cache_service_outputs table, as its cache
// service's migration lays it out: the key it stored (project-domain-key),
// the output's URI, the serialized flyteidl2.cacheservice.Metadata message
// (possibly NULL), and its timestamps. Flyte's service stores no literals:
// it refuses output_literals on Put, and the table has no column for them.
type flyteRow struct {
	Key         string
	OutputURI   string
	Metadata    []byte
	LastUpdated time.Time
	CreatedAt   time.Time
}

// source reads a Flyte cache service database.
type source struct {
	conn *pgx.Conn
}

func openSource(ctx context.Context, url string) (*source, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse the Flyte database's URL: %w", err)
	}
	// The import only reads Flyte's database; the session makes sure.
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		// pgx redacts the password of a URL it could parse.
		return nil, fmt.Errorf("connect to the Flyte database: %w", err)
	}
	return &source{conn: conn}, nil
}

func (s *source) close(ctx context.Context) { _ = s.conn.Close(ctx) }

// errNotFlyte means the source has no table of Flyte's cache service.
var errNotFlyte = errors.New("the source database has no cache_service_outputs table: is --from Flyte's cache service database?")

// batch returns up to limit rows whose key sorts after after (every row when
// first is set), in key order. Keyset paging keeps each read short and lets
// an interrupted import resume from the last key it reported.
func (s *source) batch(ctx context.Context, after string, first bool, limit int) ([]flyteRow, error) {
	// Two statements, not one with "$1 OR key > $2", and the limit written
	// into the text: a generic plan of either parameter could not be sure
	// that an index scan stopping after limit rows is cheapest, and would
	// scan and sort the whole table for every batch.
	query := `SELECT key, output_uri, metadata, last_updated, created_at FROM cache_service_outputs`
	args := []any{}
	if !first {
		query += ` WHERE key > $1`
		args = append(args, after)
	}
	query += ` ORDER BY key LIMIT ` + strconv.Itoa(limit)
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, sourceError(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (flyteRow, error) {
		var r flyteRow
		err := row.Scan(&r.Key, &r.OutputURI, &r.Metadata, &r.LastUpdated, &r.CreatedAt)
		return r, err
	})
	if err != nil {
		return nil, sourceError(err)
	}
	return out, nil
}

// reservations counts the rows of cache_service_reservations, which the
// import leaves behind; -1 when the table is missing.
func (s *source) reservations(ctx context.Context) (int64, error) {
	var n int64
	err := s.conn.QueryRow(ctx, `SELECT count(*) FROM cache_service_reservations`).Scan(&n)
	if store.IsUndefinedTable(err) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("count Flyte's reservations: %w", err)
	}
	return n, nil
}

func sourceError(err error) error {
	if store.IsUndefinedTable(err) {
		return errNotFlyte
	}
	return fmt.Errorf("read Flyte's cache_service_outputs: %w", err)
}
