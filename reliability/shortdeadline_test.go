package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// TestShortDeadlinesCostNoConnection sends hundreds of calls whose deadlines
// (Connect-Timeout-Ms) end before or while the database works on them: first
// 1 to 3 ms, then 6 to 20 ms on rows the test keeps locking so that the
// deadlines expire mid-statement. Each is answered deadline_exceeded or
// served, and the server's pool dials no new PostgreSQL connection for any
// of them: a caller's deadline no longer interrupts a statement (which
// breaks the connection), and one too short to be met never reaches the
// database.
func TestShortDeadlinesCostNoConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	hot := []string{"hot-0", "hot-1"}
	for _, k := range hot {
		b.seedHot(t, k)
	}
	b.waitQuiet(t, 10*time.Second)
	b.fillPool(t)
	before := b.pool.Stat().NewConnsCount()

	calls := pick(300, 3000)
	var failures []string
	var mu sync.Mutex
	codes := map[string]int{}
	run := func(phase string, timeoutMs func(*rand.Rand) int) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		const workers = 12
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), uint64(len(phase))))
				<-start
				for range calls / workers {
					key := hot[rng.IntN(len(hot))]
					proc, body := "GetOrExtendReservation", fmt.Sprintf(`{"scope":{"org":"org","project":"project","domain":"domain"},"key":%q,"ownerId":"w%d"}`, key, w)
					switch rng.IntN(3) {
					case 1:
						proc, body = "Get", fmt.Sprintf(`{"scope":{"org":"org","project":"project","domain":"domain"},"key":%q}`, key)
					case 2:
						proc, body = "Put", fmt.Sprintf(`{"scope":{"org":"org","project":"project","domain":"domain"},"key":%q,"output":{"uri":"w%d"},"overwrite":true}`, key, w)
					}
					ms := timeoutMs(rng)
					res := b.post(t.Context(), t, proc, "application/json", strings.NewReader(body),
						http.Header{"Connect-Timeout-Ms": {strconv.Itoa(ms)}})
					code := "ok"
					if res.status != http.StatusOK {
						code = res.code.String()
					}
					mu.Lock()
					codes[phase+" "+code]++
					if code != "ok" && code != connect.CodeDeadlineExceeded.String() {
						failures = append(failures, fmt.Sprintf("%s: %s with %dms: %s (%s)", phase, proc, ms, code, res.msg))
					}
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
	}

	run("1-3ms", func(r *rand.Rand) int { return 1 + r.IntN(3) })
	lockCtx, stopLocking := context.WithCancel(t.Context())
	lockerDone := make(chan error, 1)
	go func() { lockerDone <- b.holdHotLocks(lockCtx) }()
	run("6-20ms under locks", func(r *rand.Rand) int { return 6 + r.IntN(15) })
	stopLocking()
	if err := <-lockerDone; err != nil {
		t.Fatalf("lock holder: %v", err)
	}
	b.waitQuiet(t, 15*time.Second)

	for _, f := range failures {
		t.Error(f)
	}
	dialled := b.pool.Stat().NewConnsCount() - before
	t.Logf("%d calls per phase: %v; the pool dialled %d new connections", calls, codes, dialled)
	if codes["6-20ms under locks "+connect.CodeDeadlineExceeded.String()] < calls/20 {
		t.Errorf("too few deadlines expired under the locks for the test to mean anything: %v", codes)
	}
	if dialled > 2 {
		t.Errorf("the pool dialled %d new PostgreSQL connections for short-deadline calls, want ~0", dialled)
	}
	b.assertNoServerErrors(t)
}

// fillPool opens every connection the server's pool may hold, so that a
// new connection afterwards can only replace a lost one.
func (b *testBundle) fillPool(t *testing.T) {
	t.Helper()
	var conns []*pgxpool.Conn
	for range b.pool.Config().MaxConns {
		c, err := b.pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
}

// seedHot gives key an entry and a reservation for holdHotLocks to lock.
func (b *testBundle) seedHot(t *testing.T, key string) {
	t.Helper()
	c := b.connectClient()
	if _, err := c.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf("seed")})); err != nil {
		t.Fatalf("seed %s: %v", key, err)
	}
	if _, err := c.GetOrExtendReservation(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
		Scope: scope(), Key: key, OwnerId: "seed", HeartbeatInterval: durationpb.New(100 * time.Millisecond)})); err != nil {
		t.Fatalf("seed reservation %s: %v", key, err)
	}
}

// TestDetachedStatementEndsWithinDBTimeout proves the other half of
// detaching: a caller that gives up is answered at once, and the statement
// it leaves running (here, a claim waiting on a row lock held for far longer)
// is ended by the store's own deadline, releasing its connection.
func TestDetachedStatementEndsWithinDBTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	b.seedHot(t, "held")
	const dbTimeout, lockHeld = 300 * time.Millisecond, 5 * time.Second
	st, err := store.Open(t.Context(), store.Config{URL: b.admin.Config().ConnString(), MaxConns: 2, Timeout: dbTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, "short-timeout pool", st.Close) })
	if err := st.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}

	locker, err := b.admin.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Rollback(context.Background()) }()
	if _, err := locker.Exec(t.Context(), `SELECT 1 FROM reservations FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err = st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, err := tx.ClaimReservation(ctx, store.Claim{
			ID: store.ID{Org: "org", Project: "project", Domain: "domain", Key: "held"}, OwnerID: "late",
			HeartbeatInterval: time.Second, Lease: time.Hour})
		return err
	})
	answered := time.Since(locked)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim behind a held lock with a 20ms deadline: %v, want the caller's deadline", err)
	}
	if answered > lockHeld/2 {
		t.Fatalf("caller answered after %v, while the lock was still held: it waited for the statement", answered)
	}

	// The detached claim must give up within --db-timeout, while the lock is
	// still held: no session of the store waits on it any more, and the
	// store's pool has its connection back.
	for {
		var waiting int
		if err := b.admin.QueryRow(t.Context(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND wait_event_type = 'Lock'`, b.dbName).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 0 && st.Pool().Stat().AcquiredConns() == 0 {
			break
		}
		if time.Since(locked) > lockHeld {
			t.Fatalf("%d sessions still wait on the lock %v after it was taken; --db-timeout is %v", waiting, lockHeld, dbTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("caller answered after %v; the detached statement ended by %v", answered, time.Since(locked))
	if err := locker.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
}
