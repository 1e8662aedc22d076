package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
// reports whether it did. Releases are not coalesced as Gets are: one
// DELETE for the releases that queued showed no gain (cachebench compare,
// lifecycle at c=16 and 64: PostgreSQL CPU per flow ×0.97 and ×0.99, within
// the spread).
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

// ClaimReservation decides c as Tx.ClaimReservation does, taking the row
// lock only when the claimant may become or stay the owner.
//
// Most claimants of a busy key only learn that someone else holds it; when
// each of them took the row lock they queued behind one another, one lock
// hold at a time. Here the first round trip, outside any transaction,
// inserts the reservation if the key has none (INSERT ... ON CONFLICT DO
// NOTHING: of two first-comers exactly one inserts) and reads the row with
// whether it is live by the database's clock, in one statement. An insert
// that won, or a live row held by another, is the answer. The claimant's
// own live row (a heartbeat) is extended by one more statement on the same
// connection, without a transaction (extendOwnSQL). Only a row that has
// expired, or changed under those statements, goes on to the locked
// transaction, which re-decides everything after the lock is held, as
// Tx.ClaimReservation does.
//
// The plain read is consistent on its own: its snapshot S precedes the
// clock reading T of the same statement, and only the holder can extend an
// unexpired reservation, so a row held by another with expires_at > T was
// held by that owner, unexpired, at S. The answer "held by another" is true
// at S, whatever happened after (a release, or a takeover once it expired).
func (s *Store) ClaimReservation(ctx context.Context, c Claim) (ClaimResult, error) {
	for range lockAttempts {
		res, err := s.claimUnlocked(ctx, c)
		if errors.Is(err, errNotRead) {
			// Another first-comer's insert committed after our snapshot:
			// read it with a fresh one rather than queue for its lock.
			res, err = s.claimUnlocked(ctx, c)
		}
		if err == nil || !errors.Is(err, errNotDecided) && !errors.Is(err, errNotRead) {
			return res, err
		}
		s.lockedClaims.Add(1)
		caller := ctx
		var locked ClaimResult
		err = s.InTx(ctx, func(ctx context.Context, tx *Tx) error {
			// locked, not res: on a goroutine of its own this may still
			// run after InTx answered a caller who left.
			r, err := tx.claimLocked(ctx, caller, c)
			locked = r
			return err
		})
		if errors.Is(err, ErrNotFound) {
			continue // released between our read and our lock
		}
		if err != nil {
			return ClaimResult{}, err
		}
		return locked, nil // a nil error came from the op that set locked
	}
	return ClaimResult{}, fmt.Errorf("claim reservation: row kept vanishing after %d attempts", lockAttempts)
}

// The first round trip of a claim ends with one of these when it did not
// decide the claim: the row is the claimant's own or has expired, so the
// locked transaction decides; or the statement's snapshot did not hold the
// row its insert conflicted with.
var (
	errNotDecided = errors.New("claim needs the row lock")
	errNotRead    = errors.New("claim conflicted with a row its snapshot does not hold")
	errOwnLive    = errors.New("claimant holds the live reservation")
)

// claimUnlocked is ClaimReservation's first round trip: it answers the claim
// when the insert won or the row is live and another's, or, with a second
// statement, when the row is the claimant's own and live, and otherwise
// ends with errNotDecided or errNotRead. Claims that queue together share
// one batch (claimbatch.go). It runs detached from the caller's
// cancellation, as every statement of the store does (detach).
func (s *Store) claimUnlocked(caller context.Context, c Claim) (ClaimResult, error) {
	ctx, cancel := s.deadline(caller)
	defer cancel()
	res, err := s.claims.do(ctx, s, claimOps, claimArg{c: c, caller: caller, lockTimeout: s.lockTimeout})
	if errors.Is(err, errOwnLive) { // a heartbeat, left to its caller (claimFirst)
		err = s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
			r, err := extendOwnOn(ctx, conn, c, res.Previous, s.lockTimeout)
			res = r
			return err
		})
		err = classify("claim reservation", err)
	}
	if err != nil { // errNotDecided and errNotRead stay themselves for errors.Is
		return ClaimResult{}, err
	}
	return res, nil
}

// claimAlone is claimUnlocked for one claim on a connection of its own, as
// a claim whose batch failed is served again.
func (s *Store) claimAlone(ctx context.Context, a claimArg) (ClaimResult, error) {
	var res ClaimResult
	err := s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		r, err := claimOne(ctx, conn, a)
		if err == nil && r.Created {
			if gone := callerGone(ctx, a.caller); gone != nil {
				giveBack(ctx, conn, a.c, r.Current.ExpiresAt)
				return gone
			}
		}
		res = r
		return err
	})
	if err != nil {
		return ClaimResult{}, classify("claim reservation", err)
	}
	return res, nil // a nil error came from the op that set res
}

// execer is a connection, pooled or not.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// giveBack releases a reservation just granted to a caller that has gone
// (InTx rolls back for such a caller; a claim that committed in its own
// pipeline undoes its grant instead): nobody would learn it owns the key,
// and the key would wait out a lease that nobody holds. Best effort: if it
// fails, the lease expires.
//
// It deletes only the lease this claim granted (expiresAt, as the database
// wrote it): the same owner's retry may have extended it meanwhile, and
// that lease belongs to a caller still waiting for its answer. Deleting it
// would let a third claimant take the key while that caller owns it.
func giveBack(ctx context.Context, conn execer, c Claim, expiresAt time.Time) {
	_, _ = conn.Exec(ctx, `
		DELETE FROM reservations
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4 AND owner_id = $5 AND expires_at = $6`,
		c.ID.Org, c.ID.Project, c.ID.Domain, c.ID.Key, c.OwnerID, expiresAt)
}

// claimUnlockedSQL inserts a reservation unless the key has one, and
// otherwise reads the row, with whether it is live by the database's clock,
// in one statement: its first column says which. The read shares the
// statement's snapshot, taken before the insert: a row another claimant
// committed after it stops the insert yet is not read, and the claim then
// reads it again with a fresh snapshot (ClaimReservation).
const claimUnlockedSQL = `
	WITH inserted AS (
		INSERT INTO reservations (org, project, domain, key, owner_id, heartbeat_interval_ns, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, cache_now() + $7::interval)
		ON CONFLICT (org, project, domain, key) DO NOTHING
		RETURNING owner_id, heartbeat_interval_ns, expires_at)
	SELECT true, owner_id, heartbeat_interval_ns, expires_at, true FROM inserted
	UNION ALL
	SELECT false, owner_id, heartbeat_interval_ns, expires_at, expires_at > cache_now()
	FROM reservations
	WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4 AND NOT EXISTS (SELECT FROM inserted)`

// claimUnlockedArgs are claimUnlockedSQL's arguments for c.
func claimUnlockedArgs(c Claim) []any {
	id := c.ID
	return []any{id.Org, id.Project, id.Domain, id.Key, c.OwnerID, int64(c.HeartbeatInterval), c.Lease}
}

// claimUnlockedOn runs claimUnlockedSQL on q.
func claimUnlockedOn(ctx context.Context, q querier, c Claim) (ClaimResult, error) {
	return claimFrom(q.QueryRow(ctx, claimUnlockedSQL, claimUnlockedArgs(c)...), c)
}

// claimFrom reads claimUnlockedSQL's answer for c from row.
func claimFrom(row pgx.Row, c Claim) (ClaimResult, error) {
	r := Reservation{ID: c.ID}
	var created, live bool
	var heartbeatNS int64
	err := row.Scan(&created, &r.OwnerID, &heartbeatNS, &r.ExpiresAt, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return ClaimResult{}, errNotRead // committed by another after our snapshot (or released since)
	}
	if err != nil {
		return ClaimResult{}, classify("claim reservation", err)
	}
	r.HeartbeatInterval = time.Duration(heartbeatNS)
	r.ExpiresAt = r.ExpiresAt.UTC()
	switch {
	case created:
		return ClaimResult{Created: true, Previous: r, Granted: true, Current: r}, nil
	case live && r.OwnerID != c.OwnerID:
		return ClaimResult{Previous: r, Current: r}, nil
	case live:
		return ClaimResult{Previous: r}, errOwnLive
	}
	return ClaimResult{}, errNotDecided
}

// extendOwnSQL extends the claimant's own live reservation: a heartbeat.
// It needs no transaction and no lock of its own: only the holder changes a
// live reservation, and the UPDATE's row lock orders the holder's
// concurrent calls. If the row changed after the statement's snapshot (a
// release, a takeover once it expired), PostgreSQL checks the WHERE again on
// the row as it now is, clock read again, and extends only if it still
// holds; else the claim goes on to the locked transaction.
//
// A row only locked meanwhile (a locked claim that found the lease live,
// or a session from outside) is not checked again: the WHERE and the new
// expiry keep the clock read before the wait. RETURNING reads the clock
// after the write, and a lease that lost more than an eighth of its length
// ($9) to such a wait goes on to the locked transaction, which extends it
// again from the clock read after its lock: no heartbeat is granted a
// lease that ran out while it waited. The eighth, not less: a statement
// delayed by a busy machine alone need not take the lock.
//
// Its lock wait ends at the store's lock timeout ($8, milliseconds; NULL
// keeps PostgreSQL's), as a transaction's does (Tx.send): set_config for
// the statement's own implicit transaction, in a CTE the UPDATE joins, so
// that it has run before the UPDATE can wait for the row.
const extendOwnSQL = `
	WITH bounded AS MATERIALIZED (
		SELECT set_config('lock_timeout', coalesce($8, current_setting('lock_timeout')), true))
	UPDATE reservations SET heartbeat_interval_ns = $6, expires_at = cache_now() + $7::interval
	FROM bounded
	WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4
		AND owner_id = $5 AND expires_at > cache_now()
	RETURNING reservations.heartbeat_interval_ns, reservations.expires_at,
		cache_now() - (reservations.expires_at - $7::interval) > $9::interval`

// extendOwnOn runs extendOwnSQL on conn for the claimant of previous, its
// lock wait bounded by lockTimeout (zero: PostgreSQL's setting). It ends
// with errNotDecided if the row is no longer the claimant's and live.
func extendOwnOn(ctx context.Context, conn querier, c Claim, previous Reservation, lockTimeout time.Duration) (ClaimResult, error) {
	var lockTimeoutMS *string
	if ms := lockTimeoutMillis(lockTimeout); ms > 0 {
		v := strconv.FormatInt(ms, 10)
		lockTimeoutMS = &v
	}
	id := c.ID
	current := previous
	var heartbeatNS int64
	var waited bool
	err := conn.QueryRow(ctx, extendOwnSQL,
		id.Org, id.Project, id.Domain, id.Key, c.OwnerID, int64(c.HeartbeatInterval), c.Lease, lockTimeoutMS, c.Lease/8,
	).Scan(&heartbeatNS, &current.ExpiresAt, &waited)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && waited {
		return ClaimResult{}, errNotDecided
	}
	if err != nil {
		return ClaimResult{}, classify("claim reservation", err)
	}
	current.HeartbeatInterval, current.ExpiresAt = time.Duration(heartbeatNS), current.ExpiresAt.UTC()
	return ClaimResult{Previous: previous, Granted: true, Current: current}, nil
}

// lockReservationSQL locks a reservation's row and reads it as it is once
// the lock is held.
const lockReservationSQL = `
	SELECT owner_id, heartbeat_interval_ns, expires_at
	FROM reservations
	WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4
	FOR UPDATE`

// grantReservationSQL gives a locked reservation to $5 if $5 holds it or it
// has expired, by the clock read now, after the lock.
const grantReservationSQL = `
	UPDATE reservations SET owner_id = $5, heartbeat_interval_ns = $6, expires_at = cache_now() + $7::interval
	WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4
		AND (owner_id = $5 OR expires_at <= cache_now())
	RETURNING owner_id, heartbeat_interval_ns, expires_at`

// claimLocked is ClaimReservation's locked transaction for a row that
// exists: lock it, decide and write by the database's clock after the lock
// is held, and commit, all in one pipeline, so the lock is held for no
// round trip at all. It returns ErrNotFound when the row has vanished.
func (t *Tx) claimLocked(ctx, caller context.Context, c Claim) (_ ClaimResult, err error) {
	id := c.ID
	b := &pgx.Batch{}
	b.Queue(lockReservationSQL, id.Org, id.Project, id.Domain, id.Key)
	b.Queue(grantReservationSQL, id.Org, id.Project, id.Domain, id.Key, c.OwnerID, int64(c.HeartbeatInterval), c.Lease)
	b.Queue("COMMIT")
	results, err := t.send(ctx, b)
	if err != nil {
		return ClaimResult{}, classify("claim reservation", err)
	}
	defer closeResults(results, &err)
	var res ClaimResult
	if res.Previous, err = scanReservation(id, results.QueryRow()); err != nil {
		return ClaimResult{}, err // ErrNotFound: vanished; the COMMIT ends the empty transaction
	}
	res.Current, err = scanReservation(id, results.QueryRow())
	switch {
	case errors.Is(err, ErrNotFound):
		res.Current = res.Previous // held by another: nothing updated
	case err != nil:
		return ClaimResult{}, err
	default:
		res.Granted = true
	}
	if _, err := results.Exec(); err != nil {
		return ClaimResult{}, classify("commit", err)
	}
	t.begun = false // the pipeline's COMMIT ended it: InTx has nothing to commit
	// The pipeline must be closed before the connection takes another
	// statement (pgx answers "conn busy"). Its COMMIT has succeeded, so
	// what Close could still report does not undo the grant.
	_ = results.Close()
	if res.Granted && res.Previous.OwnerID != c.OwnerID && callerGone(ctx, caller) != nil {
		giveBack(ctx, t.conn, c, res.Current.ExpiresAt) // a takeover nobody will hear of
	}
	return res, nil
}
