package store

import (
	"context"
	"fmt"
	"time"
)

// DeleteExpiredReservations deletes at most limit reservations that expired
// before cutoff and returns how many it deleted.
//
// Several replicas may run it at once: each locks its batch with FOR UPDATE
// SKIP LOCKED, so two sweepers never wait on or delete the same row, and a
// row that a claim holds locked is left for a later sweep. The DELETE checks
// expires_at again, so a row that a claim extended after the batch was chosen
// is kept.
func (s *Store) DeleteExpiredReservations(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	return s.deleteBefore(ctx, "reservations", "expires_at", cutoff, limit)
}

// DeleteEntriesUpdatedBefore deletes at most limit entries last updated
// before cutoff and returns how many it deleted. It is safe to run
// concurrently in the same way as DeleteExpiredReservations; an entry that a
// Put refreshed after the batch was chosen is kept.
func (s *Store) DeleteEntriesUpdatedBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	return s.deleteBefore(ctx, "cache_entries", "last_updated_at", cutoff, limit)
}

// deleteBefore deletes one batch of rows of table whose timestamp column is
// before cutoff, oldest first (the column is indexed). table and column are
// constants of this file, never input. The batch's row locks last only for
// this one statement.
func (s *Store) deleteBefore(ctx context.Context, table, column string, cutoff time.Time, limit int) (int64, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	// The batch is materialized so that it is chosen and locked once; the
	// outer DELETE joins it by primary key and repeats the cutoff test.
	sql := fmt.Sprintf(`
		WITH batch AS MATERIALIZED (
			SELECT org, project, domain, key FROM %[1]s
			WHERE %[2]s < $1
			ORDER BY %[2]s
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		)
		DELETE FROM %[1]s t USING batch b
		WHERE t.org = b.org AND t.project = b.project AND t.domain = b.domain AND t.key = b.key
			AND t.%[2]s < $1`, table, column)
	tag, err := s.db.Exec(ctx, sql, cutoff, limit)
	if err != nil {
		return 0, classify("delete old "+table, err)
	}
	return tag.RowsAffected(), nil
}
