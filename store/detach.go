package store

import (
	"cmp"
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MinDeadline is the least time a caller's deadline must leave for a call to
// touch the database. A closer deadline cannot be met (a pool checkout and a
// round trip alone take about a millisecond under load), so such a call
// waits out its deadline, at most this long, and fails with the caller's
// context error, which the manager answers deadline_exceeded.
const MinDeadline = 5 * time.Millisecond

// Redial policy while dials fail (PostgreSQL at max_connections, a network
// fault): callers wait for a pooled connection instead, polling the idle ones
// with a growing pause, and dial again no sooner than redialAfter.
const (
	idlePollMin = time.Millisecond
	idlePollMax = 20 * time.Millisecond
	redialAfter = 250 * time.Millisecond
)

// detached runs the store's single statements the way detach describes; the
// entry, reservation and sweep methods call it where they would call the
// pool.
type detached struct{ s *Store }

// Exec runs one statement through detach.
func (d detached) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := d.s.detach(ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		t, err := conn.Exec(ctx, sql, args...)
		tag = t
		return err
	})
	if err != nil {
		// Perhaps answered before the statement ended: tag may be
		// written yet, so it is not read.
		return pgconn.CommandTag{}, err
	}
	return tag, nil // detach returned op's result, received from its goroutine
}

// QueryRow returns a row whose Scan runs the query through detach.
func (d detached) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return detachedRow{s: d.s, ctx: ctx, sql: sql, args: args}
}

type detachedRow struct {
	s    *Store
	ctx  context.Context
	sql  string
	args []any
}

// Scan scans into dest. On a goroutine of its own (see detach) it scans
// into fresh values and copies them to dest only on success, so a
// statement that finishes after its caller gave up writes nothing the
// caller can still see.
func (r detachedRow) Scan(dest ...any) error {
	if r.s.runsHere(r.ctx) {
		return r.s.runHere(r.ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
			return conn.QueryRow(ctx, r.sql, r.args...).Scan(dest...)
		})
	}
	tmp := make([]any, len(dest))
	for i, d := range dest {
		tmp[i] = reflect.New(reflect.TypeOf(d).Elem()).Interface()
	}
	err := r.s.detach(r.ctx, func(ctx context.Context, conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, r.sql, r.args...).Scan(tmp...)
	})
	if err != nil {
		return err
	}
	for i, d := range dest {
		reflect.ValueOf(d).Elem().Set(reflect.ValueOf(tmp[i]).Elem())
	}
	return nil
}

// bounded is a caller's context under the store's deadline (Store.deadline).
// It remembers whether the caller's own deadline comes first, which decides
// where detach runs a statement.
type bounded struct {
	context.Context
	callerDeadline time.Time // zero: the caller brought none
}

// callerFirst reports whether the caller's deadline comes before the
// store's: then it is the context's deadline.
func (b *bounded) callerFirst() bool {
	d, _ := b.Deadline()
	return !b.callerDeadline.IsZero() && d.Equal(b.callerDeadline)
}

// detach runs op on a pooled connection, detached from the caller's
// cancellation but under the store's own deadline (--db-timeout).
//
// Cancelling a statement in flight costs a connection: pgx breaks the
// connection to interrupt it, and the pool dials (a fork and an
// authentication on the server) a new one. Clients choose their deadlines,
// so they would choose that rate. Instead op runs to its end, or to the
// store's deadline, and the connection goes back to the pool. A detached
// statement therefore never outlives the store's deadline, and holds its
// connection at most that long.
//
// Where op runs depends on which deadline comes first. When it is the
// store's (the caller has none, or a later one: the usual case), op runs on
// the caller's goroutine: it ends by the store's deadline, before the
// caller's, so nothing is gained by answering sooner. A caller that is
// cancelled meanwhile (its client went away) is answered when op ends,
// which no one is waiting for; op's own checks of callerGone see it.
// When the caller's deadline comes first, op runs on a goroutine that owns
// the connection and returns it to the pool, and the caller is answered as
// soon as its context ends, with that context's error. The two hand over
// the answer once (handoff): op either delivers it, or learns that the
// caller has left and undoes what nobody will hear of (callerGone).
//
// A caller whose deadline leaves less than MinDeadline never reaches the
// pool (see MinDeadline). Nor does one that gives up while it waits for a
// connection: giving up a checkout costs nothing, and work for callers who
// have left would otherwise queue for the pool ahead of live callers, so a
// storm of cancelled calls starved the ones that stayed.
func (s *Store) detach(ctx context.Context, op func(ctx context.Context, conn *pgxpool.Conn) error) error {
	if s.runsHere(ctx) {
		return s.runHere(ctx, op)
	}
	if err := tooLate(ctx); err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	h := &handoff{}
	opCtx = context.WithValue(opCtx, handoffKey{}, h)
	// The checkout ends with the caller or with the store's deadline.
	acquireCtx, stopAcquire := context.WithCancel(opCtx)
	stopAfter := context.AfterFunc(ctx, stopAcquire)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		defer stopAcquire()
		defer stopAfter()
		err := s.withConn(acquireCtx, opCtx, op)
		h.deliver() // op said nothing: its answer is delivered if the caller is still there
		done <- err
	}()
	select {
	case err := <-done:
		if errors.Is(err, errLeftInQueue) {
			return gaveUp(ctx)
		}
		return err
	case <-ctx.Done():
		if !h.leave() {
			// op already promised its answer: it is on its way.
			if err := <-done; !errors.Is(err, errLeftInQueue) {
				return err
			}
		}
		return gaveUp(ctx)
	}
}

// runsHere reports whether detach runs a statement for ctx on the caller's
// goroutine: when the store's deadline comes first, or nothing can end the
// caller's wait at all.
func (s *Store) runsHere(ctx context.Context) bool {
	if ctx.Done() == nil {
		return true
	}
	b, ok := ctx.(*bounded)
	return ok && !b.callerFirst()
}

// runHere is detach on the caller's goroutine: the checkout ends with the
// caller (or the store's deadline), and op runs detached from the caller's
// cancellation, under the store's deadline, to its end.
func (s *Store) runHere(ctx context.Context, op func(ctx context.Context, conn *pgxpool.Conn) error) error {
	if err := tooLate(ctx); err != nil {
		return err
	}
	conn, err := s.acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return gaveUp(ctx)
		}
		return classify("acquire connection", err)
	}
	defer s.release(conn)
	d, ok := ctx.Deadline()
	if !ok { // not bounded by Store.deadline: the store's deadline starts now
		d = time.Now().Add(s.timeout)
	}
	opCtx, cancel := context.WithDeadlineCause(context.WithoutCancel(ctx), d, errStoreDeadline)
	defer cancel()
	return op(opCtx, conn)
}

// handoff settles, once, whether a detached op's answer reaches its caller
// or the caller has left without it. Without it a grant committed just as
// the caller's deadline passed could be answered with the deadline, never
// given back, and leave the key to wait out a lease nobody holds.
type handoff struct{ state atomic.Int32 } // 0 open, 1 delivered, 2 left

type handoffKey struct{}

// deliver promises op's answer to the caller, unless the caller has left;
// it reports whether the answer will be received.
func (h *handoff) deliver() bool {
	h.state.CompareAndSwap(0, 1)
	return h.state.Load() == 1
}

// leave records that the caller stops waiting, unless op promised its
// answer already; it reports whether the caller left.
func (h *handoff) leave() bool {
	h.state.CompareAndSwap(0, 2)
	return h.state.Load() == 2
}

// callerGone returns, inside a detached op (ctx is op's), the error of a
// caller that will never receive op's answer, or nil: when it is not nil,
// op should undo what it did for the caller alone. On a goroutine of its
// own, op's answer is promised to the caller if the caller is still there
// (handoff), and from then on callerGone is nil; on the caller's
// goroutine, it is the caller's context's error.
func callerGone(ctx, caller context.Context) error {
	if h, ok := ctx.Value(handoffKey{}).(*handoff); ok {
		if caller.Err() != nil {
			h.leave() // gone already, though it may not have said so yet
		}
		if h.deliver() {
			return nil
		}
		return cmp.Or(caller.Err(), context.Canceled)
	}
	return caller.Err()
}

// gaveUp is the answer to a caller whose context ended before its call did.
func gaveUp(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStoreDeadline) {
		return cause // the store's deadline, not the caller's: unavailable
	}
	return ctx.Err()
}

// tooLate returns the caller's context error if it has ended, or after
// waiting it out if its deadline is closer than MinDeadline.
func tooLate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) >= MinDeadline {
		return nil
	}
	// Wait rather than fail at once, so the caller sees its own deadline
	// expire and the error is the caller's, not the database's.
	<-ctx.Done()
	return ctx.Err()
}

// errLeftInQueue is withConn's answer when its checkout was stopped because
// the caller gave up: detach answers the caller's own context error.
var errLeftInQueue = errors.New("caller left while waiting for a connection")

// withConn runs op on a connection from acquire (within acquireCtx) and
// releases it. Once op holds the connection it runs within ctx alone.
// Release discards a connection left inside a transaction or broken.
func (s *Store) withConn(acquireCtx, ctx context.Context, op func(ctx context.Context, conn *pgxpool.Conn) error) error {
	conn, err := s.acquire(acquireCtx)
	if err != nil {
		if acquireCtx.Err() != nil && ctx.Err() == nil {
			return errLeftInQueue
		}
		return classify("acquire connection", err)
	}
	defer s.release(conn)
	return op(ctx, conn)
}

// acquire checks out a connection. When the pool has to dial and the dial
// fails while the pool holds working connections (PostgreSQL at
// max_connections, say), it waits for one of those to be released, within
// ctx, instead of failing a request that a pooled connection can serve.
// It dials again every redialAfter, so the pool grows back once the server
// has room.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := s.pool.Acquire(ctx)
	if err == nil || !isDialError(err) {
		return conn, err
	}
	pause := idlePollMin
	redial := time.Now().Add(redialAfter)
	for {
		if s.pool.Stat().TotalConns() == 0 {
			return nil, err // nothing pooled to wait for: the database is unreachable
		}
		if idle := s.pool.AcquireAllIdle(ctx); len(idle) > 0 {
			for _, c := range idle[1:] {
				c.Release()
			}
			return idle[0], nil
		}
		if time.Now().After(redial) {
			conn, dialErr := s.pool.Acquire(ctx)
			if dialErr == nil || !isDialError(dialErr) {
				return conn, dialErr
			}
			err, redial = dialErr, time.Now().Add(redialAfter)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), err)
		case <-time.After(pause):
		}
		pause = min(2*pause, idlePollMax)
	}
}

// isDialError reports whether err is a failure to open a new connection, as
// opposed to a failure of the pool or of the caller's context.
func isDialError(err error) bool {
	_, ok := errors.AsType[*pgconn.ConnectError](err)
	return ok
}
