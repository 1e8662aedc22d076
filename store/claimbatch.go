package store

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// claimArg is one claim's first round trip (claimUnlocked).
type claimArg struct {
	c           Claim
	caller      context.Context // the caller's own, to tell whether it is still there
	lockTimeout time.Duration   // the store's, for a heartbeat's wait (extendOwnOn)
}

// claimOps coalesces the first round trips of claims (coalesce.go): those
// that queue together go as one write batch, as Puts do (putbatch.go).
var claimOps = &batchOps[claimArg, ClaimResult]{
	op:     "claim reservation",
	one:    claimFirst,
	many:   claimMany,
	limit:  maxWriteBatch,
	alone:  func(ctx context.Context, s *Store, a claimArg) (ClaimResult, error) { return s.claimAlone(ctx, a) },
	settle: settleClaim,
	undo:   undoClaim,
}

// claimFirst is one claim's first statement on q, claimUnlockedSQL. A
// heartbeat (the claimant's own live reservation) ends with errOwnLive,
// for its caller to extend outside the coalescer (claimUnlocked): its
// lock wait, up to the store's lock timeout, must hold neither a batch
// nor one of the claims' few slots.
func claimFirst(ctx context.Context, q querier, a claimArg) (ClaimResult, error) {
	return claimUnlockedOn(ctx, q, a.c)
}

// claimOne is one claim's first round trip on q, alone: claimUnlockedSQL,
// and for the claimant's own live reservation the heartbeat that extends
// it.
func claimOne(ctx context.Context, q querier, a claimArg) (ClaimResult, error) {
	r, err := claimUnlockedOn(ctx, q, a.c)
	if errors.Is(err, errOwnLive) {
		r, err = extendOwnOn(ctx, q, a.c, r.Previous, a.lockTimeout)
	}
	return r, err
}

// claimMany runs the claimUnlockedSQL of calls as one pipelined batch in
// key order, which gives way to other sessions' locks (putbatch.go): one
// write to the database and one commit for them all. Each statement is
// still its caller's own, so each caller gets its own outcome; one claim
// of a key the batch inserted earlier reads that row, as it would read it
// committed. A heartbeat (the claimant's own live reservation) ends with
// errOwnLive, for its caller to extend alone (claimUnlocked): its lock
// wait, up to the store's lock timeout, must not hold up the others.
//
// As for Puts, an error that stored nothing fails the batch and every
// claim is served again alone; a connection lost after the batch was sent
// answers each call with the error, as a lone claim is answered.
func claimMany(ctx context.Context, conn *pgxpool.Conn, calls []*pending[claimArg, ClaimResult]) error {
	return writeBatch(ctx, conn, calls, writeBatchOps[claimArg, ClaimResult]{
		op:   "claim reservation",
		idOf: func(a claimArg) ID { return a.c.ID },
		queue: func(b *pgx.Batch, a claimArg) {
			b.Queue(claimUnlockedSQL, claimUnlockedArgs(a.c)...)
		},
		read: func(results pgx.BatchResults, c *pending[claimArg, ClaimResult]) error {
			c.res, c.err = claimFrom(results.QueryRow(), c.arg.c)
			if errors.Is(c.err, errOwnLive) || errors.Is(c.err, errNotDecided) || errors.Is(c.err, errNotRead) {
				return nil // an outcome, not a failure
			}
			return c.err
		},
	})
}

// settleClaim promises a grant to its caller, or, if the caller has left,
// reports that the grant must be given back (undoClaim): nobody would
// learn it owns the key, and the key would wait out a lease nobody holds.
func settleClaim(call *pending[claimArg, ClaimResult]) (undo bool) {
	if call.err != nil || !call.res.Created {
		return false
	}
	if call.arg.caller.Err() != nil {
		call.handoff.leave() // gone already, though it may not have said so yet
	}
	return !call.handoff.deliver()
}

// undoClaim gives back the grant of a caller who left (giveBack).
func undoClaim(ctx context.Context, conn *pgxpool.Conn, call *pending[claimArg, ClaimResult]) {
	giveBack(ctx, conn, call.arg.c, call.res.Current.ExpiresAt)
	call.res, call.err = ClaimResult{}, cmp.Or(call.arg.caller.Err(), context.Canceled)
}
