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
	order := byID(calls, func(a putArg) ID { return a.e.ID })
	var batch pgx.Batch
	batch.Queue(batchGiveWay)
	for _, c := range order {
		batch.Queue(putSQL, putArgs(c.arg.e, c.arg.replace)...)
	}
	results := conn.SendBatch(ctx, &batch)
	err := func() error {
		if _, err := results.Exec(); err != nil {
			return err
		}
		for _, c := range order {
			tag, err := results.Exec()
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				c.err = ErrConflict
			}
		}
		return nil
	}()
	err = errors.Join(err, results.Close())
	if err == nil {
		return nil
	}
	for _, c := range calls {
		c.err = nil
	}
	if unstored(err) {
		return err // served again alone
	}
	for _, c := range calls {
		c.err = classify("put entry", err)
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
