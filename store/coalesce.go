package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maxBatch bounds the calls one coalesced statement serves.
const maxBatch = 256

// coalescer serves calls of one kind that wait for a connection together.
// Under load many calls for different keys wait at the same moment;
// whichever gets a connection first takes every call of its kind still
// waiting and serves them all with one statement (or one batch), so the
// database parses, plans, answers (and flushes its log) once where it did
// so for each, and the server writes and reads once. A kind runs at most
// as many statements at once as it has slots (coalescedSlots): on two
// cores the pool's connections are seldom all busy, so without a bound
// of its own almost every call found one and ran alone. Nothing waits to
// collect a batch: a call that finds a slot and a connection at once
// serves only what queued meanwhile (usually nothing but itself), with
// the statement it would run alone, so an idle server answers exactly as
// before.
type coalescer[A, R any] struct {
	mu      sync.Mutex
	waiting []*pending[A, R] // under mu
	// batched counts calls served by a statement shared with others.
	batched atomic.Int64
	// retried counts calls served again alone after their shared statement
	// failed as a whole.
	retried atomic.Int64
	// slots, when not nil, bounds the statements of this kind running at
	// once: a call that finds them all taken waits, queued, and is served
	// with whatever else queued by the next statement (see checkout).
	slots chan struct{}
}

// batchOps are the two ways to serve calls of one kind.
type batchOps[A, R any] struct {
	// op names the operation in errors.
	op string
	// one serves a call alone, as it was served before coalescing.
	one func(ctx context.Context, q querier, arg A) (R, error)
	// many serves calls (at least two) with one statement (or one batch)
	// on conn, setting each call's res or err; an error fails them as a
	// whole, and each call is then served again alone.
	many func(ctx context.Context, conn *pgxpool.Conn, calls []*pending[A, R]) error
	// limit bounds the calls one batch serves (zero: maxBatch).
	limit int
	// alone, if set, serves a call again alone after its batch failed;
	// by default one does, on a connection of its own.
	alone func(ctx context.Context, s *Store, arg A) (R, error)
	// settle, if set, runs for each call once its answer is set and
	// before the caller can read it: where the answer gave the caller
	// something it must hear of (a claim's grant), settle promises the
	// answer through the call's handoff, or reports that the caller has
	// left and undo must take it back. Every caller that stays is
	// answered before any undo runs, on the connection that served it.
	settle func(call *pending[A, R]) (undo bool)
	undo   func(ctx context.Context, conn *pgxpool.Conn, call *pending[A, R])
}

// pending is one call waiting in a coalescer.
type pending[A, R any] struct {
	ctx         context.Context // the caller's, with the store's deadline
	arg         A
	stopAcquire context.CancelFunc // ends the caller's wait for a connection once taken
	taken       bool               // under coalescer.mu: another caller serves it
	done        chan struct{}      // closed when res, err and retry are set
	res         R
	err         error
	retry       bool // the shared statement failed: serve it alone
	// handoff is between the call's caller, who may leave (await), and
	// whoever serves it, who may then have to undo its answer (settle).
	handoff handoff
}

// do serves arg, alone or with the calls that queued while the
// connections were busy. ctx carries the store's deadline. Like every
// single statement of the store (detach), the statement runs detached from
// the caller's cancellation: on the goroutine of the caller who took the
// connection when the store's deadline comes first for it, else on a
// goroutine that owns the connection; each caller is answered as soon as
// its own context ends.
func (q *coalescer[A, R]) do(ctx context.Context, s *Store, ops *batchOps[A, R], arg A) (R, error) {
	var zero R
	if err := tooLate(ctx); err != nil {
		return zero, classify(ops.op, err)
	}
	// The wait for a slot and a connection ends with ctx, but not under
	// ctx's deadline, which may be a caller's few milliseconds: the pool
	// pings a connection idle for over a second under the checkout's
	// deadline, and a ping that deadline cuts breaks the connection (pgx
	// closes one whose round trip it interrupts), so the pool dials anew.
	// With the slots, connections often sit idle that long.
	acquireCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer stop()
	defer context.AfterFunc(ctx, stop)()
	call := &pending[A, R]{ctx: ctx, arg: arg, stopAcquire: stop, done: make(chan struct{})}
	q.mu.Lock()
	q.waiting = append(q.waiting, call)
	q.mu.Unlock()

	conn, err := q.checkout(acquireCtx, s)
	q.mu.Lock()
	if call.taken {
		q.mu.Unlock()
		if conn != nil {
			q.giveBack(s, conn) // another caller's statement serves ours
		}
		return q.await(s, ops, call)
	}
	if i := slices.Index(q.waiting, call); i >= 0 {
		q.waiting = slices.Delete(q.waiting, i, i+1)
	}
	if err != nil {
		q.mu.Unlock()
		if ctx.Err() != nil {
			err = ctx.Err() // as the checkout would have ended under ctx
		}
		return zero, classify(ops.op, classify("acquire connection", err))
	}
	batch := q.take(call, cmp.Or(ops.limit, maxBatch))
	q.mu.Unlock()

	for _, c := range batch[1:] {
		c.stopAcquire()
	}
	if len(batch) > 1 {
		q.batched.Add(int64(len(batch)))
	}
	// As detach does when the store's deadline comes first, the statement
	// runs here, and served alone it ends by that deadline. A shared
	// statement gets a store deadline of its own, since this caller may
	// have spent most of its own waiting; if this caller's deadline comes
	// before that one, the statement runs on a goroutine instead, since
	// no caller's deadline may cut the others' statement.
	here := s.runsHere(ctx)
	d, ok := ctx.Deadline()
	if !ok || len(batch) > 1 {
		d = time.Now().Add(s.timeout)
		if b, ok := ctx.(*bounded); ok && !b.callerDeadline.IsZero() && b.callerDeadline.Before(d) {
			here = false
		}
	}
	if here {
		released := false
		defer func() {
			if !released { // serve panicked
				q.giveBack(s, conn)
			}
		}()
		q.serve(conn, ops, batch, d)
		// Back before await: a call the shared statement left to be read
		// alone (a large entry, a failed batch) takes a connection of its
		// own, and with every other one busy it would wait for this one.
		q.giveBack(s, conn)
		released = true
		return q.await(s, ops, call)
	}
	go func() {
		defer q.giveBack(s, conn)
		q.serve(conn, ops, batch, time.Now().Add(s.timeout))
	}()
	return q.await(s, ops, call)
}

// checkout takes one of q's slots, if it has them, then a pooled
// connection. Both waits end with ctx.
func (q *coalescer[A, R]) checkout(ctx context.Context, s *Store) (*pgxpool.Conn, error) {
	if q.slots != nil {
		select {
		case q.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	conn, err := s.acquire(ctx)
	if err != nil && q.slots != nil {
		<-q.slots
	}
	return conn, err
}

// giveBack returns what checkout took.
func (q *coalescer[A, R]) giveBack(s *Store, conn *pgxpool.Conn) {
	s.release(conn)
	if q.slots != nil {
		<-q.slots
	}
}

// await returns call's answer, or the caller's own cancellation or deadline
// if that comes first (an answer that arrived just as the caller gave up is
// kept, as detach keeps it).
func (q *coalescer[A, R]) await(s *Store, ops *batchOps[A, R], call *pending[A, R]) (R, error) {
	var zero R
	select {
	case <-call.done:
	case <-call.ctx.Done():
		select {
		case <-call.done:
		default:
			if !call.handoff.leave() {
				<-call.done // promised (settle): it comes at once
				break
			}
			if cause := context.Cause(call.ctx); errors.Is(cause, errStoreDeadline) {
				return zero, cause // the store's deadline, not the caller's: unavailable
			}
			return zero, classify(ops.op, call.ctx.Err())
		}
	}
	if call.retry {
		if ops.alone != nil {
			return ops.alone(call.ctx, s, call.arg)
		}
		return ops.one(call.ctx, s.db, call.arg)
	}
	return call.res, call.err
}

// take returns a batch of first and up to limit-1 of the calls still
// waiting, oldest first, marking them taken. A call whose caller has
// given up stays behind, to be answered on its own goroutine with its
// cancellation: served in a batch, a Put of a caller already told it
// failed could be stored. The caller holds mu.
func (q *coalescer[A, R]) take(first *pending[A, R], limit int) []*pending[A, R] {
	if len(q.waiting) == 0 {
		return []*pending[A, R]{first}
	}
	batch := []*pending[A, R]{first}
	left := q.waiting[:0]
	for _, c := range q.waiting {
		if len(batch) == limit || c.ctx.Err() != nil {
			left = append(left, c)
			continue
		}
		c.taken = true
		batch = append(batch, c)
	}
	clear(q.waiting[len(left):])
	q.waiting = left
	return batch
}

// serve runs ops.many for batch on conn (ops.one for a batch of one) and
// answers each call by deadline, the store's. The statement
// serves callers with different deadlines, so none of them may end it for
// the others: like the single-call path (and every statement of the store,
// detach), it runs detached from all of them under the store's own
// deadline. A caller's deadline passing mid-statement would otherwise make
// pgx close the connection, and a client's short deadline would cost a
// PostgreSQL connection again. If it fails as a whole (a value PostgreSQL
// rejects, a lost connection), every call is served again alone, so that
// each gets exactly the answer or error it would have got without the
// others.
func (q *coalescer[A, R]) serve(conn *pgxpool.Conn, ops *batchOps[A, R], batch []*pending[A, R], deadline time.Time) {
	ctx, cancel := context.WithDeadlineCause(context.WithoutCancel(batch[0].ctx), deadline, errStoreDeadline)
	defer cancel()
	var err error
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = ops.one(ctx, conn, c.arg)
	} else if err = ops.many(ctx, conn, batch); err != nil {
		q.retried.Add(int64(len(batch)))
	}
	var undo []*pending[A, R]
	for _, c := range batch {
		if err != nil {
			var zero R
			c.res, c.err, c.retry = zero, nil, true
		} else if ops.settle != nil && ops.settle(c) {
			undo = append(undo, c)
			continue // answered once undone: it may be this goroutine's own caller
		}
		close(c.done)
	}
	for _, c := range undo {
		ops.undo(ctx, conn, c)
		close(c.done)
	}
}
