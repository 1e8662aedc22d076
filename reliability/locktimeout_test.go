package reliability

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// TestRowLockedFromOutsideKeepsOtherKeysServed is issue 8, defect 10. A
// reservation row is locked by another session; 32 clients claim it as its
// holder (a claim that needs the lock) while 32 others read other keys,
// through a pool of 4 connections. Each claim
// gives up at the lock timeout with unavailable (it used to wait the whole
// database deadline holding a connection, until reads starved and
// readiness failed); every read and the readiness check succeed.
//
// The database deadline is long (a minute) and the clients' deadline half
// of it: generous for a loaded machine, where the 32 lock waits of 200ms
// through 4 connections alone take 1.6s, while claims that held their
// connection for the database deadline would still starve the reads past
// theirs.
func TestRowLockedFromOutsideKeepsOtherKeysServed(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig(), func(c *store.Config) {
		c.MaxConns, c.Timeout, c.LockTimeout = 4, time.Minute, 200*time.Millisecond
	})
	c := b.connectClient()
	claimOwner(t, c, "hot", "holder", time.Minute)
	for i := range 32 {
		if _, err := c.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: fmt.Sprint("cold-", i), Output: uriOf("s3://b/cold")})); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := b.admin.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // ends the outside lock
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM reservations WHERE key = 'hot' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	const n = 32
	claimErrs, getErrs := make([]error, n), make([]error, n)
	raceN(2*n, func(i int) {
		// The reads' deadline is below the database's: a read that waited
		// for a connection behind claims waiting out the database deadline
		// would miss it.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if i < n {
			// The holder's claims: the ones that need the row lock (another
			// owner's claim is answered from a plain read, locked or not).
			_, claimErrs[i] = c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
				Scope: scope(), Key: "hot", OwnerId: "holder", HeartbeatInterval: durationpb.New(time.Second),
			}))
			return
		}
		_, getErrs[i-n] = c.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: fmt.Sprint("cold-", i-n)}))
	})
	for i := range n {
		if code := connect.CodeOf(claimErrs[i]); code != connect.CodeUnavailable {
			t.Errorf("claim %d on the locked row: %v, want unavailable", i, claimErrs[i])
		} else {
			assertNoLeak(t, claimErrs[i].Error())
		}
		if getErrs[i] != nil {
			t.Errorf("get %d of another key while a row was locked: %v", i, getErrs[i])
		}
	}
	// Readiness, as a load balancer probes it, through the same edge.
	ready, err := b.http1.Get(b.baseURL + "/readyz")
	if err != nil {
		t.Fatalf("readiness while a row was locked: %v", err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusOK {
		t.Errorf("readiness while a row was locked: %s, want 200", ready.Status)
	}
	// Once the lock goes, the key is claimable again through the same pool.
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := claimOwner(t, c, "hot", "holder", time.Minute); r.GetOwnerId() != "holder" {
		t.Fatalf("after the outside lock ended: owner %q, want holder", r.GetOwnerId())
	}
	b.assertNoServerErrors(t)
}

// TestContendedClaimsAreServedNotRefused has 64 clients claim one key at
// once, through a pool of 64 connections so that all of them queue on the
// row lock, many times over: none is refused, every one is told the same
// owner, and exactly one is it.
//
// The lock timeout here is long (30s): the last of 64 claimants waits for
// the 63 transactions before it in one lock wait, so whether that fits
// under the default 2s is a matter of the machine's speed (on 2 cores at a
// load of 20 it did not), which the cachebench claim-contended workload
// measures. The slowest claim is logged against the default.
func TestContendedClaimsAreServedNotRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig(), func(c *store.Config) {
		c.MaxConns, c.Timeout, c.LockTimeout = 64, time.Minute, 30*time.Second
	})
	clients := []interface {
		GetOrExtendReservation(context.Context, *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error)
	}{b.connectClient(), b.grpcClient()}
	const claimants = 64
	trials := pick(10, 100)
	var slowest time.Duration
	over := 0
	for trial := range trials {
		key := fmt.Sprint("contended-", trial)
		errs, took := make([]error, claimants), make([]time.Duration, claimants)
		owners := make([]string, claimants)
		raceN(claimants, func(i int) {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			start := time.Now()
			res, err := clients[i%2].GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
				Scope: scope(), Key: key, OwnerId: fmt.Sprint("w", i),
			}))
			took[i], errs[i] = time.Since(start), err
			if err == nil {
				owners[i] = res.Msg.GetReservation().GetOwnerId()
			}
		})
		winners := 0
		for i, err := range errs {
			if err != nil {
				t.Fatalf("trial %d, claimant %d: %v (a contended claim was refused)", trial, i, err)
			}
			if owners[i] != owners[0] {
				t.Fatalf("trial %d: claimant %d was told owner %q, claimant 0 %q", trial, i, owners[i], owners[0])
			}
			if owners[i] == fmt.Sprint("w", i) {
				winners++
			}
			slowest = max(slowest, took[i])
			if took[i] > store.DefaultConfig().LockTimeout {
				over++
			}
		}
		if winners != 1 {
			t.Fatalf("trial %d: %d claimants own the reservation, want 1 (owner %q)", trial, winners, owners[0])
		}
	}
	t.Logf("%d trials × %d claimants of one key: slowest claim %v, %d claims slower than the default lock timeout %v",
		trials, claimants, slowest, over, store.DefaultConfig().LockTimeout)
}
