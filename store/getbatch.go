package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// getOps coalesces GetEntry calls (coalesce.go).
var getOps = &batchOps[ID, Entry]{op: "get entry", one: getOne, many: getMany}

// getEntry reads id's entry, alone or with the Gets that queued while the
// connections were busy.
func (s *Store) getEntry(ctx context.Context, id ID) (Entry, error) {
	return s.gets.do(ctx, s, getOps, id)
}

// maxBatchedInline is the largest inline output a shared statement reads.
// A batch holds all its rows in memory at once, where Gets alone hold one
// each per connection; a larger output is read by its caller alone, so a
// burst of Gets for large entries (the slow-reader attack's, say) stays
// bounded by the pool as before.
const maxBatchedInline = 8 << 10

// getManySQL reads the entries of the keys in four parallel arrays; each
// row carries the 1-based position of its key, so duplicates each get
// theirs, and whether its inline output is too large to read here ($5).
const getManySQL = `SELECT k.i, coalesce(octet_length(e.output_inline) > $5, false),
		e.output_uri, CASE WHEN octet_length(e.output_inline) > $5 THEN NULL ELSE e.output_inline END, ` + entryColumnsAfterInline + `
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(org, project, domain, key, i)
	JOIN cache_entries e ON e.org = k.org AND e.project = k.project AND e.domain = k.domain AND e.key = k.key`

// getMany reads the entries of calls in one statement; a key with no entry
// is ErrNotFound for its caller alone, and a large one is left for its
// caller to read alone.
func getMany(ctx context.Context, conn *pgxpool.Conn, calls []*pending[ID, Entry]) error {
	n := len(calls)
	orgs, projects, domains, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, c := range calls {
		orgs[i], projects[i], domains[i], keys[i] = c.arg.Org, c.arg.Project, c.arg.Domain, c.arg.Key
	}
	rows, err := conn.Query(ctx, getManySQL, orgs, projects, domains, keys, maxBatchedInline)
	if err != nil {
		return err
	}
	defer rows.Close()
	found := make([]bool, n)
	for rows.Next() {
		var i int64
		var large bool
		var r entryRow
		if err := rows.Scan(append([]any{&i, &large}, r.dest()...)...); err != nil {
			return err
		}
		if large {
			calls[i-1].retry = true
		} else {
			calls[i-1].res = r.entry(calls[i-1].arg)
		}
		found[i-1] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, c := range calls {
		if !found[i] {
			c.err = ErrNotFound
		}
	}
	return nil
}
