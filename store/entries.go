package store

import (
	"context"
	"time"
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

// GetEntry returns the entry with the given ID, or ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id ID) (Entry, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	e := Entry{ID: id}
	var uri *string
	err := s.db.QueryRow(ctx, `
		SELECT output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at,
			-- Trusted only while the copy of last_updated_at matches: a
			-- previous version's overwrite moves it (migration 004).
			coalesce(literals AND flyte_written_at = last_updated_at, false),
			CASE WHEN flyte_written_at = last_updated_at THEN flyte_source END
		FROM cache_entries
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		id.Org, id.Project, id.Domain, id.Key,
	).Scan(&uri, &e.Inline, &e.SourceName, &e.SourceVersion, &e.Labels, &e.CreatedAt, &e.LastUpdatedAt,
		&e.Literals, &e.FlyteSource)
	if err != nil {
		return Entry{}, classify("get entry", err)
	}
	e.CreatedAt, e.LastUpdatedAt = e.CreatedAt.UTC(), e.LastUpdatedAt.UTC()
	if uri != nil {
		e.URI = *uri
	} else if e.Inline == nil {
		e.Inline = []byte{}
	}
	return e, nil
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
	var uri *string
	var inline []byte
	if e.URI != "" {
		uri = &e.URI
	} else {
		inline = e.Inline
		if inline == nil {
			inline = []byte{} // an empty inline output is still an output, not NULL
		}
	}
	labels := e.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	var olderThan *time.Duration
	if replace.OlderThan > 0 {
		olderThan = &replace.OlderThan
	}
	// The clock is read once, in a subquery, so created_at and
	// last_updated_at of a new entry are equal and the max_age test compares
	// against the same instant that is stored.
	tag, err := s.db.Exec(ctx, `
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
		WHERE $10 OR e.last_updated_at < EXCLUDED.last_updated_at - $11::interval`,
		e.ID.Org, e.ID.Project, e.ID.Domain, e.ID.Key, uri, inline, e.SourceName, e.SourceVersion, labels,
		replace.Always, olderThan, e.Literals && uri == nil, e.FlyteSource,
	)
	if err != nil {
		return classify("put entry", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrConflict
	}
	return nil
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
