package store

import (
	"context"
	"fmt"
	"time"
)

// DeleteExpiredReservations deletes at most limit reservations that expired
// more than retention ago by the database's clock, and returns how many it
// deleted.
//
// Several replicas may run it at once: each locks its batch with FOR UPDATE
// SKIP LOCKED, so two sweepers never wait on or delete the same row, and a
// row that a claim holds locked is left for a later sweep. The DELETE checks
// expires_at again, so a row that a claim extended after the batch was chosen
// is kept.
func (s *Store) DeleteExpiredReservations(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	return s.deleteBefore(ctx, "reservations", "expires_at", retention, limit)
}

// DeleteEntriesOlderThan deletes at most limit entries last updated more
// than age ago by the database's clock, and returns how many it deleted. It
// is safe to run concurrently in the same way as DeleteExpiredReservations;
// an entry that a Put refreshed after the batch was chosen is kept.
func (s *Store) DeleteEntriesOlderThan(ctx context.Context, age time.Duration, limit int) (int64, error) {
	return s.deleteBefore(ctx, "cache_entries", "last_updated_at", age, limit)
}

// deleteBefore deletes one batch of rows of table whose timestamp column is
// more than age before the database's clock, oldest first (the column is
// indexed). table and column are constants of this file, never input. The
// batch's row locks last only for this one statement.
func (s *Store) deleteBefore(ctx context.Context, table, column string, age time.Duration, limit int) (int64, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	// The cutoff is read once, as a scalar subquery (an init plan), so that
	// the index can be searched with it and both tests see the same instant.
	// The batch is materialized so that it is chosen and locked once; the
	// outer DELETE joins it by primary key and repeats the cutoff test.
	sql := fmt.Sprintf(`
		WITH cutoff AS MATERIALIZED (
			SELECT cache_now() - $1::interval AS at
		), batch AS MATERIALIZED (
			SELECT org, project, domain, key FROM %[1]s
			WHERE %[2]s < (SELECT at FROM cutoff)
			ORDER BY %[2]s
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		)
		DELETE FROM %[1]s t USING batch b
		WHERE t.org = b.org AND t.project = b.project AND t.domain = b.domain AND t.key = b.key
			AND t.%[2]s < (SELECT at FROM cutoff)`, table, column)
	tag, err := s.db.Exec(ctx, sql, age, limit)
	if err != nil {
		return 0, classify("delete old "+table, err)
	}
	return tag.RowsAffected(), nil
}
