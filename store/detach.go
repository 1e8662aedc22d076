package store

import (
	"context"
	"errors"
	"reflect"
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

// Scan scans into fresh values and copies them to dest only on success, so a
// statement that finishes after its caller gave up writes nothing the caller
// can still see.
func (r detachedRow) Scan(dest ...any) error {
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

// detach runs op on a pooled connection, detached from the caller's
// cancellation but under the store's own deadline (--db-timeout).
//
// Cancelling a statement in flight costs a connection: pgx breaks the
// connection to interrupt it, and the pool dials (a fork and an
// authentication on the server) a new one. Clients choose their deadlines,
// so they would choose that rate. Instead op runs to its end, or to the
// store's deadline, in a goroutine that owns the connection and returns it
// to the pool; the caller is answered as soon as its context ends, with that
// context's error. A detached statement therefore never outlives the store's
// deadline, and holds its connection at most that long.
//
// A caller whose deadline leaves less than MinDeadline never reaches the
// pool (see MinDeadline).
func (s *Store) detach(ctx context.Context, op func(ctx context.Context, conn *pgxpool.Conn) error) error {
	if err := tooLate(ctx); err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	if ctx.Done() == nil { // nothing can cancel the caller: no goroutine needed
		defer cancel()
		return s.withConn(opCtx, op)
	}
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- s.withConn(opCtx, op)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done: // finished just as the caller gave up: keep the answer
			return err
		default:
			if cause := context.Cause(ctx); errors.Is(cause, errStoreDeadline) {
				return cause // the store's deadline, not the caller's: unavailable
			}
			return ctx.Err()
		}
	}
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

// withConn runs op on a connection from acquire and releases it. Release
// discards a connection left inside a transaction or broken.
func (s *Store) withConn(ctx context.Context, op func(ctx context.Context, conn *pgxpool.Conn) error) error {
	conn, err := s.acquire(ctx)
	if err != nil {
		return classify("acquire connection", err)
	}
	defer conn.Release()
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
