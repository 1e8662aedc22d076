package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ID is the identity of an entry or a reservation. Its parts stay separate
// columns all the way down, so no two scopes can collide.
type ID struct {
	Org, Project, Domain, Key string
}

// Entry is a stored output. Exactly one of URI and Inline is meaningful:
// URI when it is not empty, Inline (possibly empty) otherwise. CreatedAt and
// LastUpdatedAt are read from the database; PutEntry sets them itself.
type Entry struct {
	ID            ID
	URI           string
	Inline        []byte
	SourceName    string
	SourceVersion string
	Labels        map[string]string
	CreatedAt     time.Time
	LastUpdatedAt time.Time
	// Literals says Inline holds a serialized Flyte LiteralMap stored
	// through Flyte's API (migration 004). GetEntry sets it, and
	// FlyteSource, only while no previous version has overwritten the entry
	// since.
	Literals bool
	// FlyteSource is a serialized flyteidl2.core.Identifier stored through
	// Flyte's API, nil otherwise. The store keeps it opaque; whether it still
	// describes the entry is the manager's call.
	FlyteSource []byte
}

// Replace says when PutEntry may replace an existing entry.
type Replace struct {
	// Always replaces whatever is there.
	Always bool
	// OlderThan, when positive, replaces an entry last updated more than
	// this long ago by the database's clock.
	OlderThan time.Duration
}

// GetEntry returns the entry with the given ID, or ErrNotFound. Calls that
// wait for a connection at the same moment are served by one statement
// (getbatch.go), each with its own answer, error and deadline.
func (s *Store) GetEntry(ctx context.Context, id ID) (Entry, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return s.getEntry(ctx, id)
}

// entryColumns are the columns an Entry is read from, in dest's order.
// The entry table's alias is e.
const entryColumns = `e.output_uri, e.output_inline, ` + entryColumnsAfterInline

// entryColumnsAfterInline are entryColumns after output_inline.
const entryColumnsAfterInline = `e.source_name, e.source_version, e.labels, e.created_at, e.last_updated_at,
	-- Trusted only while the copy of last_updated_at matches: a
	-- previous version's overwrite moves it (migration 004).
	coalesce(e.literals AND e.flyte_written_at = e.last_updated_at, false),
	CASE WHEN e.flyte_written_at = e.last_updated_at THEN e.flyte_source END`

// entryRow receives one row of entryColumns.
type entryRow struct {
	e   Entry
	uri *string
}

// dest is where Scan puts entryColumns.
func (r *entryRow) dest() []any {
	return []any{&r.uri, &r.e.Inline, &r.e.SourceName, &r.e.SourceVersion, &r.e.Labels, &r.e.CreatedAt, &r.e.LastUpdatedAt,
		&r.e.Literals, &r.e.FlyteSource}
}

// entry is the scanned entry of id.
func (r *entryRow) entry(id ID) Entry {
	e := r.e
	e.ID = id
	e.CreatedAt, e.LastUpdatedAt = e.CreatedAt.UTC(), e.LastUpdatedAt.UTC()
	if r.uri != nil {
		e.URI = *r.uri
	} else if e.Inline == nil {
		e.Inline = []byte{}
	}
	return e
}

// querier is a pool or one of its connections.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// getOne reads the entry of id alone.
func getOne(ctx context.Context, q querier, id ID) (Entry, error) {
	var r entryRow
	err := q.QueryRow(ctx, `SELECT `+entryColumns+`
		FROM cache_entries e
		WHERE e.org = $1 AND e.project = $2 AND e.domain = $3 AND e.key = $4`,
		id.Org, id.Project, id.Domain, id.Key,
	).Scan(r.dest()...)
	if err != nil {
		return Entry{}, classify("get entry", err)
	}
	return r.entry(id), nil
}

// PutEntry inserts e, or replaces an existing entry as replace allows, in one
// statement: of concurrent writers to a new key exactly one inserts, and the
// others see the conflict. Both timestamps come from the database's clock
// (cache_now(), read once for the statement); a replaced entry keeps its
// CreatedAt. It returns ErrConflict when an entry exists that may not be
// replaced.
func (s *Store) PutEntry(ctx context.Context, e Entry, replace Replace) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	if len(e.Inline) > maxBatchedInline {
		return putOne(ctx, s.db, e, replace)
	}
	_, err := s.puts.do(ctx, s, putOps, putArg{e: e, replace: replace})
	return err
}

// putValues are e's output columns as the INSERTs bind them.
func putValues(e Entry) (uri *string, inline []byte, labels map[string]string, literals bool) {
	if e.URI != "" {
		uri = &e.URI
	} else {
		inline = e.Inline
		if inline == nil {
			inline = []byte{} // an empty inline output is still an output, not NULL
		}
	}
	labels = e.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return uri, inline, labels, e.Literals && uri == nil
}

// putOne stores e alone, as replace allows.
func putOne(ctx context.Context, q querier, e Entry, replace Replace) error {
	tag, err := q.Exec(ctx, putSQL, putArgs(e, replace)...)
	if err != nil {
		return classify("put entry", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrConflict
	}
	return nil
}

// putSQL stores one entry as replace allows. The clock is read once, in a
// subquery, so created_at and last_updated_at of a new entry are equal and
// the max_age test compares against the same instant that is stored.
const putSQL = `
		INSERT INTO cache_entries AS e
			(org, project, domain, key, output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at,
			 flyte_written_at, literals, flyte_source)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, clock.now, clock.now, clock.now, $12, $13
		FROM (SELECT cache_now() AS now) clock
		ON CONFLICT (org, project, domain, key) DO UPDATE SET
			output_uri      = EXCLUDED.output_uri,
			output_inline   = EXCLUDED.output_inline,
			source_name     = EXCLUDED.source_name,
			source_version  = EXCLUDED.source_version,
			labels          = EXCLUDED.labels,
			last_updated_at = EXCLUDED.last_updated_at,
			flyte_written_at = EXCLUDED.flyte_written_at,
			literals        = EXCLUDED.literals,
			flyte_source    = EXCLUDED.flyte_source
		WHERE $10 OR e.last_updated_at < EXCLUDED.last_updated_at - $11::interval`

// putArgs are putSQL's arguments for e.
func putArgs(e Entry, replace Replace) []any {
	uri, inline, labels, literals := putValues(e)
	var olderThan *time.Duration
	if replace.OlderThan > 0 {
		olderThan = &replace.OlderThan
	}
	return []any{e.ID.Org, e.ID.Project, e.ID.Domain, e.ID.Key, uri, inline, e.SourceName, e.SourceVersion, labels,
		replace.Always, olderThan, literals, e.FlyteSource}
}

// DeleteEntry removes the entry with the given ID, or returns ErrNotFound.
func (s *Store) DeleteEntry(ctx context.Context, id ID) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tag, err := s.db.Exec(ctx,
		`DELETE FROM cache_entries WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		id.Org, id.Project, id.Domain, id.Key)
	if err != nil {
		return classify("delete entry", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
