package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tx is a transaction. Row-locking reads exist only here, so no lock can be
// taken outside a transaction that will release it.
//
// It spends as few round trips as the semantics allow. BEGIN is not sent on
// its own: it travels in one pipeline with the transaction's first
// statements, and with it SET LOCAL lock_timeout, so that no lock wait of the
// transaction can outlast the store's lock timeout (one row locked from
// outside must not hold a pool connection per waiting request until the
// database deadline). A claim is thus one transaction in two round trips:
// BEGIN, SET, INSERT, SELECT FOR UPDATE and UPDATE in the first, COMMIT in
// the second, where sent one by one they took six; the row lock is held for
// one round trip.
type Tx struct {
	conn        *pgx.Conn
	lockTimeout time.Duration // zero: PostgreSQL's setting applies
	begun       bool          // BEGIN has been sent
}

// InTx runs fn in a transaction under the store's deadline, committing when
// fn returns nil and rolling back otherwise. fn must not make network calls:
// its locks are held until it returns.
//
// The transaction is detached from the caller's cancellation (see detach):
// it runs on to its end within the store's deadline and keeps its
// connection, and a caller whose own deadline comes first is answered at
// that deadline, unless fn has returned by then. If the caller has gone by
// the time fn returns (callerGone), the transaction rolls back instead of
// committing: nobody will see its answer. Otherwise the caller is promised
// the outcome of COMMIT, and waits for it.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	caller := ctx
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		tx := &Tx{conn: conn.Conn(), lockTimeout: s.lockTimeout}
		if err := fn(ctx, tx); err != nil {
			tx.rollback(ctx)
			return classify("transaction", err)
		}
		if err := callerGone(ctx, caller); err != nil {
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

// send runs b, preceded by BEGIN and SET LOCAL lock_timeout if the
// transaction has not begun, in one round trip. Each of b's results must then
// be read in order.
func (t *Tx) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	if t.begun {
		return t.conn.SendBatch(ctx, b), nil
	}
	first := []*pgx.QueuedQuery{{SQL: "BEGIN"}}
	if ms := lockTimeoutMillis(t.lockTimeout); ms > 0 {
		// SET takes no parameters; the value is a number of our own.
		first = append(first, &pgx.QueuedQuery{SQL: fmt.Sprintf("SET LOCAL lock_timeout = %d", ms)})
	}
	b.QueuedQueries = append(first, b.QueuedQueries...)
	results := t.conn.SendBatch(ctx, b)
	t.begun = true
	for range first {
		if _, err := results.Exec(); err != nil {
			results.Close()
			return nil, fmt.Errorf("begin: %w", err)
		}
	}
	return results, nil
}

// closeResults closes a pipeline's results, keeping the first error.
func closeResults(results pgx.BatchResults, err *error) {
	if cerr := results.Close(); *err == nil && cerr != nil {
		*err = classify("end pipeline", cerr)
	}
}

// commit sends COMMIT, if anything was begun.
func (t *Tx) commit(ctx context.Context) error {
	if !t.begun {
		return nil // nothing was read or written
	}
	_, err := t.conn.Exec(ctx, "COMMIT")
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

// lockAttempts bounds ClaimReservation's retries: a row can vanish between
// the insert that saw it and the lock that looks for it (a concurrent
// release), which sends us round once more.
const lockAttempts = 5

// Claim is one owner's request for a reservation, with the lease the manager
// grants it.
type Claim struct {
	ID                ID
	OwnerID           string
	HeartbeatInterval time.Duration
	// Lease is how long a granted reservation lives, counted from the
	// database's clock after the row lock is held.
	Lease time.Duration
}

// ClaimResult is what ClaimReservation found and did.
type ClaimResult struct {
	// Created is true when the key had no reservation and the claim
	// inserted one.
	Created bool
	// Previous is the reservation as the claim found it: once its row lock
	// was held, or, for Store.ClaimReservation's claims that take no lock
	// (held by another, a heartbeat), in the snapshot of its first
	// statement; when Created, as the claim inserted it.
	Previous Reservation
	// Granted is true when the claimant holds the reservation now.
	Granted bool
	// Current is the reservation as the transaction leaves it: the claim's,
	// with its new expiry, when Granted; Previous otherwise.
	Current Reservation
}

// ClaimReservation gives the reservation of c.ID to c.OwnerID when the key
// has none, when c.OwnerID holds it already, or when it has expired, and
// then sets it to expire c.Lease from now; otherwise it leaves the current
// holder's reservation as it is. The row stays locked until the transaction
// ends, so PostgreSQL serializes claimants across replicas.
//
// Time is the database's, read after the row lock is held: the expiry test
// and the new expiry are computed by an UPDATE that runs once the SELECT ...
// FOR UPDATE before it in the pipeline has the lock. (now() would be the
// transaction's start, before any lock wait, and a locking SELECT's own
// target list may be computed before the wait too.) So a claim that waited
// is never granted a lease that expired while it waited.
//
// The missing row is created with INSERT ... ON CONFLICT, so of two
// first-comers exactly one creates it and the other locks it. Everything
// goes in one round trip (with BEGIN, if this is the transaction's first
// statement).
func (t *Tx) ClaimReservation(ctx context.Context, c Claim) (ClaimResult, error) {
	id := c.ID
	for range lockAttempts {
		b := &pgx.Batch{}
		b.Queue(`
			INSERT INTO reservations (org, project, domain, key, owner_id, heartbeat_interval_ns, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, cache_now() + $7::interval)
			ON CONFLICT (org, project, domain, key) DO NOTHING`,
			id.Org, id.Project, id.Domain, id.Key, c.OwnerID, int64(c.HeartbeatInterval), c.Lease)
		b.Queue(lockReservationSQL, id.Org, id.Project, id.Domain, id.Key)
		b.Queue(grantReservationSQL, id.Org, id.Project, id.Domain, id.Key, c.OwnerID, int64(c.HeartbeatInterval), c.Lease)
		res, err := claimOnce(ctx, t, id, b)
		if errors.Is(err, ErrNotFound) {
			continue // released between our insert and our lock
		}
		return res, err
	}
	return ClaimResult{}, fmt.Errorf("claim reservation: row kept vanishing after %d attempts", lockAttempts)
}

func claimOnce(ctx context.Context, t *Tx, id ID, b *pgx.Batch) (_ ClaimResult, err error) {
	results, err := t.send(ctx, b)
	if err != nil {
		return ClaimResult{}, classify("claim reservation", err)
	}
	defer closeResults(results, &err)
	tag, err := results.Exec()
	if err != nil {
		return ClaimResult{}, classify("insert reservation", err)
	}
	res := ClaimResult{Created: tag.RowsAffected() == 1}
	if res.Previous, err = scanReservation(id, results.QueryRow()); err != nil {
		return ClaimResult{}, err
	}
	res.Current, err = scanReservation(id, results.QueryRow())
	switch {
	case errors.Is(err, ErrNotFound):
		res.Current = res.Previous // held by another: nothing updated
		return res, nil
	case err != nil:
		return ClaimResult{}, err
	}
	res.Granted = true
	return res, nil
}
