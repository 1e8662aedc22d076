package store

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maxGetBatch bounds the keys one coalesced statement reads.
const maxGetBatch = 256

// getQueue coalesces Gets that wait for a connection. Under load many Gets
// for different keys wait for the pool at the same moment; whichever gets a
// connection first takes every Get still waiting and reads all their keys
// in one statement, so the database parses, plans and answers once where it
// did so for each. Nothing waits to collect a batch: a Get that finds a
// connection at once reads only what queued meanwhile (usually nothing but
// itself), so an idle server answers exactly as a Get alone.
type getQueue struct {
	mu      sync.Mutex
	waiting []*getCall // under mu
	// batched counts Gets served by a statement of more than one key.
	batched atomic.Int64
}

// getCall is one GetEntry waiting in the queue.
type getCall struct {
	ctx         context.Context // the caller's, with the store's deadline
	id          ID
	stopAcquire context.CancelFunc // ends the caller's wait for a connection once taken
	taken       bool               // under getQueue.mu: another caller serves it
	done        chan struct{}      // closed when entry, err and retry are set
	entry       Entry
	err         error
	retry       bool // the batch failed as a whole: ask again alone
}

// getEntry reads id's entry, alone or with the Gets that queued while the
// connections were busy.
func (s *Store) getEntry(ctx context.Context, id ID) (Entry, error) {
	acquireCtx, stop := context.WithCancel(ctx)
	defer stop()
	call := &getCall{ctx: ctx, id: id, stopAcquire: stop, done: make(chan struct{})}
	q := &s.gets
	q.mu.Lock()
	q.waiting = append(q.waiting, call)
	q.mu.Unlock()

	conn, err := s.pool.Acquire(acquireCtx)
	q.mu.Lock()
	if call.taken {
		q.mu.Unlock()
		if conn != nil {
			conn.Release() // another caller's statement reads our key
		}
		return s.await(call)
	}
	q.remove(call)
	if err != nil {
		q.mu.Unlock()
		return Entry{}, classify("get entry", err)
	}
	batch := q.take(call)
	q.mu.Unlock()

	if len(batch) == 1 {
		defer conn.Release()
		return getOne(ctx, conn, id)
	}
	for _, c := range batch[1:] {
		c.stopAcquire()
	}
	q.batched.Add(int64(len(batch)))
	// The statement runs on its own goroutine so that every caller,
	// this one included, can give up at its own deadline while it runs.
	go func() {
		defer conn.Release()
		getBatch(conn, batch)
	}()
	return s.await(call)
}

// await returns call's answer, or the caller's own cancellation or deadline
// if that comes first.
func (s *Store) await(call *getCall) (Entry, error) {
	select {
	case <-call.done:
		if err := call.ctx.Err(); err != nil {
			return Entry{}, classify("get entry", err) // as a call alone would have seen it
		}
		if call.retry {
			return getOne(call.ctx, s.pool, call.id)
		}
		return call.entry, call.err
	case <-call.ctx.Done():
		return Entry{}, classify("get entry", call.ctx.Err())
	}
}

// remove drops call from the waiting list. The caller holds mu.
func (q *getQueue) remove(call *getCall) {
	if i := slices.Index(q.waiting, call); i >= 0 {
		q.waiting = slices.Delete(q.waiting, i, i+1)
	}
}

// take returns a batch of first and up to maxGetBatch-1 of the calls still
// waiting, oldest first, marking them taken. The caller holds mu.
func (q *getQueue) take(first *getCall) []*getCall {
	n := min(len(q.waiting), maxGetBatch-1)
	if n == 0 {
		return []*getCall{first}
	}
	batch := make([]*getCall, 0, n+1)
	batch = append(batch, first)
	for _, c := range q.waiting[:n] {
		c.taken = true
		batch = append(batch, c)
	}
	rest := copy(q.waiting, q.waiting[n:])
	clear(q.waiting[rest:])
	q.waiting = q.waiting[:rest]
	return batch
}

// getBatchSQL reads the entries of the keys in four parallel arrays; each
// row carries the 1-based position of its key, so duplicates each get theirs.
const getBatchSQL = `SELECT k.i, ` + entryColumns + `
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(org, project, domain, key, i)
	JOIN cache_entries e ON e.org = k.org AND e.project = k.project AND e.domain = k.domain AND e.key = k.key`

// getBatch reads the entries of batch in one statement on conn and answers
// each call. The statement serves callers with different deadlines, so none
// of them may cancel it for the others: it runs until the last deadline.
// If it fails as a whole (a key PostgreSQL rejects, a lost connection),
// every call asks again alone, so that each gets exactly the answer or
// error it would have got without the others.
func getBatch(conn *pgxpool.Conn, batch []*getCall) {
	var deadline time.Time
	orgs, projects, domains, keys := make([]string, len(batch)), make([]string, len(batch)), make([]string, len(batch)), make([]string, len(batch))
	for i, c := range batch {
		if d, ok := c.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
		orgs[i], projects[i], domains[i], keys[i] = c.id.Org, c.id.Project, c.id.Domain, c.id.Key
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	if !deadline.IsZero() { // GetEntry always sets one; a caller without would wait for ever
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}

	found := make([]*entryRow, len(batch))
	err := func() error {
		rows, err := conn.Query(ctx, getBatchSQL, orgs, projects, domains, keys)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var i int64
			r := &entryRow{}
			if err := rows.Scan(append([]any{&i}, r.dest()...)...); err != nil {
				return err
			}
			found[i-1] = r
		}
		return rows.Err()
	}()
	for i, c := range batch {
		switch {
		case err != nil:
			c.retry = true
		case found[i] == nil:
			c.err = ErrNotFound
		default:
			c.entry = found[i].entry(c.id)
		}
		close(c.done)
	}
}
