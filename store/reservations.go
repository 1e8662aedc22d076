package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reservation is the right of one owner to compute an entry.
type Reservation struct {
	ID                ID
	OwnerID           string
	HeartbeatInterval time.Duration
	ExpiresAt         time.Time
}

// GetReservation returns the reservation of id without locking it, or
// ErrNotFound.
func (s *Store) GetReservation(ctx context.Context, id ID) (Reservation, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return scanReservation(id, s.db.QueryRow(ctx, `
		SELECT owner_id, heartbeat_interval_ns, expires_at
		FROM reservations
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		id.Org, id.Project, id.Domain, id.Key))
}

// ReleaseReservation deletes the reservation of id if ownerID holds it, and
// reports whether it did.
func (s *Store) ReleaseReservation(ctx context.Context, id ID, ownerID string) (bool, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tag, err := s.db.Exec(ctx, `
		DELETE FROM reservations
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4 AND owner_id = $5`,
		id.Org, id.Project, id.Domain, id.Key, ownerID)
	if err != nil {
		return false, classify("release reservation", err)
	}
	return tag.RowsAffected() == 1, nil
}

func scanReservation(id ID, row pgx.Row) (Reservation, error) {
	r := Reservation{ID: id}
	var heartbeatNS int64
	if err := row.Scan(&r.OwnerID, &heartbeatNS, &r.ExpiresAt); err != nil {
		return Reservation{}, classify("read reservation", err)
	}
	r.HeartbeatInterval = time.Duration(heartbeatNS)
	r.ExpiresAt = r.ExpiresAt.UTC()
	return r, nil
}
