package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tx is a transaction. Row-locking reads exist only here, so no lock can be
// taken outside a transaction that will release it.
//
// It spends as few round trips as the semantics allow. BEGIN is not sent on
// its own: it travels in one pipeline with the transaction's first read.
// Writes that need no answer before the commit (UpdateReservation) are
// queued and sent with COMMIT, in one more pipeline. A claim is thus one
// transaction in two round trips, where BEGIN, INSERT, SELECT FOR UPDATE,
// UPDATE and COMMIT one by one took up to five; the row lock is held for one
// round trip instead of two.
type Tx struct {
	conn    *pgx.Conn
	begun   bool      // BEGIN has been sent
	pending pgx.Batch // writes to send with COMMIT
	ops     []string  // what each pending write does, for errors
}

// InTx runs fn in a transaction under the store's deadline, committing when
// fn returns nil and rolling back otherwise. fn must not make network calls:
// its locks are held until it returns.
//
// The transaction is detached from the caller's cancellation (see detach):
// a caller that gives up is answered at once, while the transaction runs on
// to its end in the background, within the store's deadline, and keeps its
// connection. If the caller has gone by the time fn returns, the
// transaction rolls back instead of committing: nobody will see its answer.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	caller := ctx
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		tx := &Tx{conn: conn.Conn()}
		if err := fn(ctx, tx); err != nil {
			tx.rollback(ctx)
			return classify("transaction", err)
		}
		if err := caller.Err(); err != nil {
			tx.rollback(ctx)
			return fmt.Errorf("transaction: %w", err)
		}
		if err := tx.commit(ctx); err != nil {
			tx.rollback(ctx)
			return classify("commit", err)
		}
		return nil
	})
}

// send runs b, preceded by BEGIN if the transaction has not begun, in one
// round trip. Each of b's results must then be read in order.
func (t *Tx) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	if !t.begun {
		b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, b.QueuedQueries...)
	}
	results := t.conn.SendBatch(ctx, b)
	if t.begun {
		return results, nil
	}
	t.begun = true
	if _, err := results.Exec(); err != nil {
		results.Close()
		return nil, fmt.Errorf("begin: %w", err)
	}
	return results, nil
}

// closeResults closes a pipeline's results, keeping the first error.
func closeResults(results pgx.BatchResults, err *error) {
	if cerr := results.Close(); *err == nil && cerr != nil {
		*err = classify("end pipeline", cerr)
	}
}

// queue adds a write to be sent with COMMIT.
func (t *Tx) queue(op, sql string, args ...any) {
	t.pending.Queue(sql, args...)
	t.ops = append(t.ops, op)
}

// commit sends the queued writes and COMMIT in one round trip.
func (t *Tx) commit(ctx context.Context) (err error) {
	if !t.begun && t.pending.Len() == 0 {
		return nil // nothing was read or written
	}
	b := &t.pending
	b.Queue("COMMIT")
	results, err := t.send(ctx, b)
	if err != nil {
		return err
	}
	defer closeResults(results, &err)
	for _, op := range t.ops {
		if _, err := results.Exec(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	_, err = results.Exec()
	return err
}

// rollback ends a transaction that failed or is abandoned. If ROLLBACK
// cannot be sent, the connection is closed, which ends the session's
// transaction on the server just the same.
func (t *Tx) rollback(ctx context.Context) {
	if t.conn.PgConn().TxStatus() == 'I' {
		return // never begun, or the failed pipeline ended it
	}
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
	}
}

// lockAttempts bounds LockReservation's retries: a row can vanish between
// the insert that saw it and the lock that looks for it (a concurrent
// release), which sends us round once more.
const lockAttempts = 5

// LockReservation inserts claim when the key has no reservation and reports
// created=true; otherwise it locks the existing row until the transaction
// ends and returns it. The insert uses ON CONFLICT, so of two first-comers
// exactly one creates the row and the other locks it. Insert and lock go in
// one round trip (with BEGIN, if this is the transaction's first statement).
func (t *Tx) LockReservation(ctx context.Context, claim Reservation) (r Reservation, created bool, err error) {
	id := claim.ID
	for range lockAttempts {
		b := &pgx.Batch{}
		b.Queue(`
			INSERT INTO reservations (org, project, domain, key, owner_id, heartbeat_interval_ns, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (org, project, domain, key) DO NOTHING`,
			id.Org, id.Project, id.Domain, id.Key, claim.OwnerID, int64(claim.HeartbeatInterval), claim.ExpiresAt)
		b.Queue(`
			SELECT owner_id, heartbeat_interval_ns, expires_at
			FROM reservations
			WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4
			FOR UPDATE`,
			id.Org, id.Project, id.Domain, id.Key)
		r, created, err = lockOnce(ctx, t, claim, b)
		if errors.Is(err, ErrNotFound) {
			continue // released between our insert and our lock
		}
		return r, created, err
	}
	return Reservation{}, false, fmt.Errorf("lock reservation: row kept vanishing after %d attempts", lockAttempts)
}

func lockOnce(ctx context.Context, t *Tx, claim Reservation, b *pgx.Batch) (_ Reservation, _ bool, err error) {
	results, err := t.send(ctx, b)
	if err != nil {
		return Reservation{}, false, classify("lock reservation", err)
	}
	defer closeResults(results, &err)
	tag, err := results.Exec()
	if err != nil {
		return Reservation{}, false, classify("insert reservation", err)
	}
	r, err := scanReservation(claim.ID, results.QueryRow())
	if err != nil || tag.RowsAffected() == 0 {
		return r, false, err
	}
	return claim, true, nil
}

// UpdateReservation overwrites the locked reservation of r.ID. The UPDATE
// is sent with COMMIT, in the same round trip, so its error is InTx's.
func (t *Tx) UpdateReservation(_ context.Context, r Reservation) error {
	t.queue("update reservation", `
		UPDATE reservations SET owner_id = $5, heartbeat_interval_ns = $6, expires_at = $7
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		r.ID.Org, r.ID.Project, r.ID.Domain, r.ID.Key, r.OwnerID, int64(r.HeartbeatInterval), r.ExpiresAt)
	return nil
}
