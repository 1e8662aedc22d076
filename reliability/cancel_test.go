package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
)

// TestCancellationStormLeavesNoTransactionLockOrConnection has many clients
// cancel their calls at random moments while the test itself holds the hot
// rows' locks now and then, so that cancellations land inside open
// transactions waiting on a lock. Afterwards no transaction is open, no row
// is locked, the pool has every connection back, and a new claimant is served
// at once.
func TestCancellationStormLeavesNoTransactionLockOrConnection(t *testing.T) {
	t.Parallel()
	cfg := manager.DefaultConfig()
	cfg.MinHeartbeat = time.Millisecond // the seeded reservations expire at once, so the storm takes them over
	b := setup(t, cfg)
	workers, callsPerWorker := 48, pick(40, 400)
	hot := []string{"hot-0", "hot-1", "hot-2"}
	clients := []struct {
		name string
		c    interface {
			GetOrExtendReservation(context.Context, *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error)
			Put(context.Context, *connect.Request[cachev1.PutRequest]) (*connect.Response[cachev1.PutResponse], error)
			Get(context.Context, *connect.Request[cachev1.GetRequest]) (*connect.Response[cachev1.GetResponse], error)
			ReleaseReservation(context.Context, *connect.Request[cachev1.ReleaseReservationRequest]) (*connect.Response[cachev1.ReleaseReservationResponse], error)
		}
	}{{"connect+json over HTTP/1.1", b.connectClient()}, {"grpc over HTTP/2", b.grpcClient()}}

	// Seed the hot rows so the test's locker has something to lock.
	for _, k := range hot {
		if _, err := clients[0].c.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: k, Output: uriOf("seed")})); err != nil {
			t.Fatalf("seed %s: %v", k, err)
		}
		if _, err := clients[0].c.GetOrExtendReservation(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: k, OwnerId: "seed", HeartbeatInterval: durationpb.New(time.Millisecond)})); err != nil {
			t.Fatalf("seed reservation %s: %v", k, err)
		}
	}

	stormCtx, stopStorm := context.WithTimeout(t.Context(), 90*time.Second)
	defer stopStorm()
	lockerDone := make(chan error, 1)
	lockerCtx, stopLocker := context.WithCancel(stormCtx)
	go func() { lockerDone <- b.holdHotLocks(lockerCtx) }()

	var cancelled, completed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	failures := make(chan error, workers*callsPerWorker)
	for w := range workers {
		wg.Go(func() {
			c := clients[w%len(clients)]
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			<-start
			for i := range callsPerWorker {
				if stormCtx.Err() != nil {
					failures <- fmt.Errorf("worker %d: storm ran out of time at call %d", w, i)
					return
				}
				ctx, cancel := context.WithCancel(stormCtx)
				// Cancel after 0-50ms (before, during or after the server's
				// work), or for three calls in eight after up to 500ms, so
				// that completed calls take the locks too. One call in eight
				// is never cancelled: on a loaded machine a call can outlast
				// any fixed delay, and the storm must still mix.
				delay := time.Duration(rng.IntN(50_000)) * time.Microsecond
				switch r := rng.IntN(8); {
				case r == 0:
					delay = time.Hour // past the storm's deadline: never
				case r <= 3:
					delay *= 10
				}
				timer := time.AfterFunc(delay, cancel)
				key, owner := hot[rng.IntN(len(hot))], fmt.Sprintf("w%d", w)
				var err error
				switch op := rng.IntN(4); op {
				case 0, 1:
					_, err = c.c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
						Scope: scope(), Key: key, OwnerId: owner, HeartbeatInterval: durationpb.New(time.Millisecond)}))
				case 2:
					_, err = c.c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf(owner), Overwrite: true}))
				case 3:
					_, err = c.c.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: scope(), Key: key, OwnerId: owner}))
				}
				timer.Stop()
				cancel()
				switch code := connect.CodeOf(err); {
				case err == nil:
					completed.Add(1)
				case code == connect.CodeCanceled || code == connect.CodeDeadlineExceeded:
					cancelled.Add(1)
				default:
					failures <- fmt.Errorf("%s, worker %d call %d: %v", c.name, w, i, err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	stopLocker()
	if err := <-lockerDone; err != nil {
		t.Fatalf("lock holder: %v", err)
	}
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	st := b.pool.Stat()
	t.Logf("%d calls: %d cancelled, %d completed; the pool opened %d connections, closed %d",
		workers*callsPerWorker, cancelled.Load(), completed.Load(), st.NewConnsCount(), st.NewConnsCount()-int64(st.TotalConns()))
	if total := int64(workers * callsPerWorker); cancelled.Load() < total/10 || completed.Load() < total/20 {
		t.Errorf("the storm did not mix cancelled and completed calls")
	}

	b.waitQuiet(t, time.Minute)
	// A newcomer is served: nothing holds the rows (a held row would answer
	// unavailable at the lock timeout, well inside this deadline, which is
	// only generous for a loaded machine). The reservations' 3ms lives have
	// lapsed by now.
	for _, k := range hot {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		res, err := clients[0].c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: k, OwnerId: "newcomer"}))
		cancel()
		if err != nil || res.Msg.GetReservation().GetOwnerId() != "newcomer" {
			t.Fatalf("newcomer's claim of %s after the storm: %v, %v", k, res, err)
		}
		got, err := clients[0].c.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: k}))
		if err != nil {
			t.Fatalf("get %s after the storm: %v", k, err)
		}
		if u := got.Msg.GetOutput().GetUri(); u != "seed" && (len(u) < 2 || u[0] != 'w') {
			t.Fatalf("%s holds %q, written by no one", k, u)
		}
	}
	b.assertNoServerErrors(t)
}

func uriOf(s string) *cachev1.CachedOutput {
	return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: s}}
}

// holdHotLocks locks every entry and reservation row for 20ms at a time,
// with 20ms gaps, until ctx ends, so the server's transactions queue behind
// it and clients cancel them mid-wait.
func (b *testBundle) holdHotLocks(ctx context.Context) error {
	conn, err := b.admin.Acquire(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer conn.Release()
	for ctx.Err() == nil {
		err := pgx.BeginFunc(context.WithoutCancel(ctx), conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM reservations FOR UPDATE`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT 1 FROM cache_entries FOR UPDATE`); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitQuiet waits (bounded) until the server's pool has every connection
// back and the database has no session of the server's in a transaction or
// a query, then proves that no row is locked.
func (b *testBundle) waitQuiet(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var busy []string
	for {
		st := b.pool.Stat()
		busy = busy[:0]
		if n := st.AcquiredConns(); n != 0 {
			busy = append(busy, fmt.Sprintf("%d pool connections still acquired", n))
		}
		if st.TotalConns() > b.pool.Config().MaxConns {
			t.Fatalf("pool holds %d connections, over its maximum %d", st.TotalConns(), b.pool.Config().MaxConns)
		}
		rows, err := b.admin.Query(t.Context(), `
			SELECT pid, state, coalesce(wait_event_type, ''), left(query, 60)
			FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
			  AND (state <> 'idle' OR xact_start IS NOT NULL)`, b.dbName)
		if err != nil {
			t.Fatalf("read pg_stat_activity: %v", err)
		}
		sessions, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var pid int
			var state, wait, query string
			err := r.Scan(&pid, &state, &wait, &query)
			return fmt.Sprintf("pid %d %s (%s): %s", pid, state, wait, query), err
		})
		if err != nil {
			t.Fatalf("read pg_stat_activity: %v", err)
		}
		busy = append(busy, sessions...)
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still busy %v after the storm: %v", limit, busy)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Held row locks do not show in pg_locks; NOWAIT finds them.
	err := pgx.BeginFunc(t.Context(), b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), `SELECT 1 FROM reservations FOR UPDATE NOWAIT`); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), `SELECT 1 FROM cache_entries FOR UPDATE NOWAIT`)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
		t.Fatalf("a row is still locked after the storm: %v", err)
	} else if err != nil {
		t.Fatalf("check row locks: %v", err)
	}
}
