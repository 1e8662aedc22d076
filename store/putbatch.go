package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// putOps coalesces non-replacing PutEntry calls (coalesce.go).
var putOps = &batchOps[Entry, struct{}]{
	op: "put entry",
	one: func(ctx context.Context, q querier, e Entry) (struct{}, error) {
		return struct{}{}, putOne(ctx, q, e, Replace{})
	},
	many: putMany,
}

// putManySQL inserts the entries of parallel arrays that have no entry yet,
// in their order, and returns the identities it inserted. Of two rows for
// one identity the first inserts and the second meets it as a conflict,
// as two Puts alone would. The clock is read once for the statement.
const putManySQL = `
	INSERT INTO cache_entries AS e
		(org, project, domain, key, output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at,
		 literals_sha256, flyte_source)
	SELECT v.org, v.project, v.domain, v.key, v.uri, v.inline, v.source_name, v.source_version, v.labels, clock.now, clock.now,
		CASE WHEN v.literals AND v.inline IS NOT NULL THEN sha256(v.inline) END, v.flyte_source
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[],
			$9::jsonb[], $10::boolean[], $11::bytea[])
		WITH ORDINALITY AS v(org, project, domain, key, uri, inline, source_name, source_version, labels, literals, flyte_source, i),
		(SELECT cache_now() AS now) clock
	ORDER BY v.i
	ON CONFLICT (org, project, domain, key) DO NOTHING
	RETURNING org, project, domain, key`

// putMany inserts the entries of calls in one statement: each caller whose
// row went in succeeds, every other is ErrConflict.
func putMany(ctx context.Context, conn *pgxpool.Conn, calls []*pending[Entry, struct{}]) error {
	n := len(calls)
	orgs, projects, domains, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	uris, inlines, names, versions := make([]*string, n), make([][]byte, n), make([]string, n), make([]string, n)
	labels, literals, sources := make([]map[string]string, n), make([]bool, n), make([][]byte, n)
	for i, c := range calls {
		e := c.arg
		orgs[i], projects[i], domains[i], keys[i] = e.ID.Org, e.ID.Project, e.ID.Domain, e.ID.Key
		uris[i], inlines[i], labels[i], literals[i] = putValues(e)
		names[i], versions[i], sources[i] = e.SourceName, e.SourceVersion, e.FlyteSource
	}
	rows, err := conn.Query(ctx, putManySQL, orgs, projects, domains, keys, uris, inlines, names, versions, labels, literals, sources)
	if err != nil {
		return err
	}
	defer rows.Close()
	inserted := make(map[ID]bool, n)
	for rows.Next() {
		var id ID
		if err := rows.Scan(&id.Org, &id.Project, &id.Domain, &id.Key); err != nil {
			return err
		}
		inserted[id] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range calls {
		if inserted[c.arg.ID] {
			delete(inserted, c.arg.ID) // the first of its identity won; the rest conflict
		} else {
			c.err = ErrConflict
		}
	}
	return nil
}
