package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A write batch (Puts, claims' first round trips) holds the row locks of
// its statements together until it commits, so unlike a lone statement it
// can be part of a deadlock: two batches cannot (each takes its locks in
// key order, byID), but a session that locks several rows in another
// order (an operator's, an import, the sweeper) can wait for one of the
// batch's rows while the batch waits for one of its. PostgreSQL would then
// abort one of the two, perhaps the other session. So a batch gives way:
// it waits for a row lock at most batchLockWait, and a batch that gives up
// stores nothing and serves its calls again alone. PostgreSQL looks for a
// deadlock only after deadlock_timeout (1 s by default) of waiting; a
// batch of at most maxWriteBatch statements has given way long before
// that (maxWriteBatch × batchLockWait, 320 ms, and its own few
// milliseconds of work), so the other session is never the one aborted.
const (
	batchLockWait = 10 * time.Millisecond
	maxWriteBatch = 32
)

// batchGiveWay is a write batch's first statement: batchLockWait as the
// transaction's lock_timeout (set_config's is_local, as SET LOCAL).
var batchGiveWay = "SELECT set_config('lock_timeout', '" +
	strconv.FormatInt(batchLockWait.Milliseconds(), 10) + "ms', true)"

// byID returns calls sorted by the key idOf gives, in the order a write
// batch takes their rows' locks. Calls of one key keep their order.
func byID[A, R any](calls []*pending[A, R], idOf func(A) ID) []*pending[A, R] {
	order := slices.Clone(calls)
	slices.SortStableFunc(order, func(a, b *pending[A, R]) int {
		x, y := idOf(a.arg), idOf(b.arg)
		return cmp.Or(cmp.Compare(x.Org, y.Org), cmp.Compare(x.Project, y.Project),
			cmp.Compare(x.Domain, y.Domain), cmp.Compare(x.Key, y.Key))
	})
	return order
}

// putArg is one PutEntry call.
type putArg struct {
	e       Entry
	replace Replace
}

// putOps coalesces PutEntry calls (coalesce.go).
var putOps = &batchOps[putArg, struct{}]{
	op: "put entry",
	one: func(ctx context.Context, q querier, a putArg) (struct{}, error) {
		return struct{}{}, putOne(ctx, q, a.e, a.replace)
	},
	many:  putMany,
	limit: maxWriteBatch,
}

// putMany stores the entries of calls with one pipelined batch of putSQL
// statements: one write to the database and one transaction for them all,
// where alone each is a round trip and a commit of its own. Each statement
// is still its caller's own, so each caller gets exactly its answer (stored,
// or ErrConflict). The batch takes the rows' locks in key order, so two
// batches never wait for each other in a cycle, and gives way to any other
// session (batchLockWait).
//
// A statement that fails, or a lock wait that gives way, aborts the whole
// transaction and stores nothing, so the error fails the batch and every
// call is served again alone (see coalescer.serve); so does an error that
// came before anything was sent (unstored). A connection lost after the
// batch was sent leaves every call as a lone Put would be left, not
// knowing whether it was stored: each gets the error, and none is run
// again.
func putMany(ctx context.Context, conn *pgxpool.Conn, calls []*pending[putArg, struct{}]) error {
	return writeBatch(ctx, conn, calls, writeBatchOps[putArg, struct{}]{
		op:   "put entry",
		idOf: func(a putArg) ID { return a.e.ID },
		queue: func(b *pgx.Batch, a putArg) {
			b.Queue(putSQL, putArgs(a.e, a.replace)...)
		},
		read: func(results pgx.BatchResults, c *pending[putArg, struct{}]) error {
			tag, err := results.Exec()
			if err == nil && tag.RowsAffected() == 0 {
				c.err = ErrConflict
			}
			return err
		},
	})
}

// writeBatchOps are what a write batch (writeBatch) needs of one kind.
type writeBatchOps[A, R any] struct {
	op    string     // names the operation in errors
	idOf  func(A) ID // the key whose row the call locks
	queue func(*pgx.Batch, A)
	// read sets c's answer from its statement's result; an error fails
	// the whole batch.
	read func(pgx.BatchResults, *pending[A, R]) error
}

// writeBatch sends one statement per call, in key order (byID), after
// batchGiveWay, as one pipelined batch and one implicit transaction, and
// reads each call's answer. If it fails, no call keeps an answer: a batch
// that surely stored nothing (unstored) returns its error, and every call
// is served again alone (coalescer.serve); one whose connection was lost
// after it was sent answers every call with the error, as a lone call
// would be answered, and none is run again.
func writeBatch[A, R any](ctx context.Context, conn *pgxpool.Conn, calls []*pending[A, R], ops writeBatchOps[A, R]) error {
	order := byID(calls, ops.idOf)
	var batch pgx.Batch
	batch.Queue(batchGiveWay)
	for _, c := range order {
		ops.queue(&batch, c.arg)
	}
	results := conn.SendBatch(ctx, &batch)
	err := func() error {
		if _, err := results.Exec(); err != nil {
			return err
		}
		for _, c := range order {
			if err := ops.read(results, c); err != nil {
				return err
			}
		}
		return nil
	}()
	err = errors.Join(err, results.Close())
	if err == nil {
		return nil
	}
	var zero R
	for _, c := range calls {
		c.res, c.err = zero, nil
	}
	if unstored(err) {
		return err // served again alone
	}
	for _, c := range calls {
		c.err = classify(ops.op, err)
	}
	return nil
}

// unstored reports whether a batch that failed with err certainly stored
// nothing: PostgreSQL refused it (and rolled its transaction back), pgx
// failed before sending it (encoding or preparing a statement), or the
// connection failed before anything was sent.
func unstored(err error) bool {
	if _, refused := errors.AsType[*pgconn.PgError](err); refused {
		return true
	}
	if _, unsent := errors.AsType[pgx.ErrPreprocessingBatch](err); unsent {
		return true
	}
	return pgconn.SafeToRetry(err)
}
