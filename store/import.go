package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// ImportEntries inserts, in one statement, each entry whose ID is not stored
// yet, and leaves every existing entry untouched (ON CONFLICT DO NOTHING), so
// that an import can run again, or resume, without overwriting anything.
// Unlike PutEntry, which stamps the database's clock, the entries keep their
// own CreatedAt and LastUpdatedAt: an import carries history over. They are
// marked as PutEntry marks them (flyte_written_at a copy of their
// LastUpdatedAt, the LiteralMap flag, Flyte's source identifier as given).
// It returns how many were inserted; the rest were present already. One entry too large to index fails the whole statement
// with ErrTooLarge, and nothing is inserted.
func (s *Store) ImportEntries(ctx context.Context, entries []Entry) (inserted int64, err error) {
	if len(entries) == 0 {
		return 0, nil
	}
	n := len(entries)
	var (
		orgs, projects, domains, keys = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		uris                          = make([]*string, n)
		inlines                       = make([][]byte, n)
		names, versions, labels       = make([]string, n), make([]string, n), make([]string, n)
		created, updated              = make([]time.Time, n), make([]time.Time, n)
		literals                      = make([]bool, n)
		flyteSources                  = make([][]byte, n)
	)
	for i, e := range entries {
		orgs[i], projects[i], domains[i], keys[i] = e.ID.Org, e.ID.Project, e.ID.Domain, e.ID.Key
		if e.URI != "" {
			uris[i] = &e.URI
		} else {
			inlines[i] = e.Inline
			if inlines[i] == nil {
				inlines[i] = []byte{} // an empty inline output is still an output, not NULL
			}
		}
		names[i], versions[i] = e.SourceName, e.SourceVersion
		l := e.Labels
		if l == nil {
			l = map[string]string{}
		}
		b, err := json.Marshal(l)
		if err != nil {
			return 0, fmt.Errorf("encode labels: %w", err)
		}
		labels[i] = string(b)
		created[i], updated[i] = e.CreatedAt, e.LastUpdatedAt
		literals[i] = e.Literals && uris[i] == nil
		flyteSources[i] = e.FlyteSource
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	// unnest turns the parallel arrays into rows: one round trip and one
	// statement for the whole batch, whatever its size.
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO cache_entries
			(org, project, domain, key, output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at,
			 flyte_written_at, literals, flyte_source)
		SELECT o, p, d, k, u, i, sn, sv, l::jsonb, c, lu, lu, lit, fs
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],
		            $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
		            $12::boolean[], $13::bytea[])
			AS t(o, p, d, k, u, i, sn, sv, l, c, lu, lit, fs)
		ON CONFLICT (org, project, domain, key) DO NOTHING`,
		orgs, projects, domains, keys, uris, inlines, names, versions, labels, created, updated, literals, flyteSources)
	if err != nil {
		return 0, classify("import entries", err)
	}
	return tag.RowsAffected(), nil
}

// CountEntries returns how many of the distinct ids are stored, for an
// import's dry run to say what it would skip as present. It reads only, and
// counts none in a database whose schema is not migrated yet, which a dry
// run must not migrate.
func (s *Store) CountEntries(ctx context.Context, ids []ID) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n := len(ids)
	orgs, projects, domains, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, id := range ids {
		orgs[i], projects[i], domains[i], keys[i] = id.Org, id.Project, id.Domain, id.Key
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var count int64
	err := s.pool.QueryRow(ctx, `
		SELECT count(*)
		FROM cache_entries e
		JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(o, p, d, k)
			ON (e.org, e.project, e.domain, e.key) = (t.o, t.p, t.d, t.k)`,
		orgs, projects, domains, keys).Scan(&count)
	if IsUndefinedTable(err) {
		return 0, nil // a database not migrated yet holds no entries
	}
	if err != nil {
		return 0, classify("count entries", err)
	}
	return count, nil
}

// IsUndefinedTable reports whether err is PostgreSQL's "relation does not
// exist": a database not migrated yet, or (for the Flyte importer) not
// Flyte's.
func IsUndefinedTable(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == pgerrcode.UndefinedTable
}
