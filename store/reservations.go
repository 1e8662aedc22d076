package store

import (
	"context"
	"errors"
	"fmt"
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

// Tx is a transaction. Row-locking reads exist only here, so no lock can be
// taken outside a transaction that will release it.
type Tx struct {
	tx pgx.Tx
}

// InTx runs fn in a transaction under the store's deadline, committing when
// fn returns nil and rolling back otherwise. fn must not make network calls:
// its locks are held until it returns.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	// BEGIN, COMMIT and ROLLBACK run without the caller's cancellation (but
	// under the deadline), so that a client hanging up mid-transaction still
	// ends it cleanly and releases its locks; pgx does not roll back on
	// cancellation by itself.
	txCtx, txCancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer txCancel()
	err := pgx.BeginFunc(txCtx, s.pool, func(tx pgx.Tx) error {
		return fn(ctx, &Tx{tx: tx})
	})
	return classify("transaction", err)
}

// lockAttempts bounds LockReservation's retries: a row can vanish between
// the insert that saw it and the lock that looks for it (a concurrent
// release), which sends us round once more.
const lockAttempts = 5

// LockReservation inserts claim when the key has no reservation and reports
// created=true; otherwise it locks the existing row until the transaction
// ends and returns it. The insert uses ON CONFLICT, so of two first-comers
// exactly one creates the row and the other locks it.
func (t *Tx) LockReservation(ctx context.Context, claim Reservation) (r Reservation, created bool, err error) {
	id := claim.ID
	for range lockAttempts {
		tag, err := t.tx.Exec(ctx, `
			INSERT INTO reservations (org, project, domain, key, owner_id, heartbeat_interval_ns, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (org, project, domain, key) DO NOTHING`,
			id.Org, id.Project, id.Domain, id.Key, claim.OwnerID, int64(claim.HeartbeatInterval), claim.ExpiresAt)
		if err != nil {
			return Reservation{}, false, classify("insert reservation", err)
		}
		if tag.RowsAffected() == 1 {
			return claim, true, nil
		}
		r, err := scanReservation(id, t.tx.QueryRow(ctx, `
			SELECT owner_id, heartbeat_interval_ns, expires_at
			FROM reservations
			WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4
			FOR UPDATE`,
			id.Org, id.Project, id.Domain, id.Key))
		if errors.Is(err, ErrNotFound) {
			continue // released between our insert and our lock
		}
		return r, false, err
	}
	return Reservation{}, false, fmt.Errorf("lock reservation: row kept vanishing after %d attempts", lockAttempts)
}

// UpdateReservation overwrites the locked reservation of r.ID.
func (t *Tx) UpdateReservation(ctx context.Context, r Reservation) error {
	_, err := t.tx.Exec(ctx, `
		UPDATE reservations SET owner_id = $5, heartbeat_interval_ns = $6, expires_at = $7
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		r.ID.Org, r.ID.Project, r.ID.Domain, r.ID.Key, r.OwnerID, int64(r.HeartbeatInterval), r.ExpiresAt)
	return classify("update reservation", err)
}

// GetReservation returns the reservation of id without locking it, or
// ErrNotFound.
func (s *Store) GetReservation(ctx context.Context, id ID) (Reservation, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return scanReservation(id, s.pool.QueryRow(ctx, `
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
	tag, err := s.pool.Exec(ctx, `
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
