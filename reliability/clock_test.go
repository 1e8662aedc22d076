package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// claimOwner claims key for owner with heartbeat and returns the reservation.
func claimOwner(t testing.TB, c cachev1connect.CacheServiceClient, key, owner string, heartbeat time.Duration) *cachev1.Reservation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
		Scope: scope(), Key: key, OwnerId: owner, HeartbeatInterval: durationpb.New(heartbeat),
	}))
	if err != nil {
		t.Fatalf("claim %s by %s: %v", key, owner, err)
	}
	return res.Msg.GetReservation()
}

// TestClaimThatWaitedIsNeverGrantedAnExpiredLease is issue 8, defect 2.
// Worker a's 600ms lease (200ms × 3) runs out. Another session locks the
// reservation row for 1.5s, longer than a lease; meanwhile b claims and
// waits for the lock. When the lock goes, b takes over: b's lease must
// expire after it was granted (the old code computed it from a clock read
// before the wait, so it had expired on arrival), and c, claiming right
// after, must be told it is b's: never two owners.
func TestClaimThatWaitedIsNeverGrantedAnExpiredLease(t *testing.T) {
	t.Parallel()
	const heartbeat, hold = 200 * time.Millisecond, 1500 * time.Millisecond
	b := setup(t, manager.DefaultConfig())
	for name, c := range b.clients() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := "waited-" + name
			claimOwner(t, c, key, "a", heartbeat)
			time.Sleep(3*heartbeat + 100*time.Millisecond) // a's lease runs out, by every clock

			tx, err := b.admin.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background()) //nolint:errcheck // ends the outside lock
			if _, err := tx.Exec(t.Context(), "SELECT 1 FROM reservations WHERE key = $1 FOR UPDATE", key); err != nil {
				t.Fatal(err)
			}
			got := make(chan *cachev1.Reservation, 1)
			go func() { got <- claimOwner(t, c, key, "b", heartbeat) }()
			time.Sleep(hold) // b waits for the row lock all this time (its lease would be 600ms)
			if err := tx.Rollback(t.Context()); err != nil {
				t.Fatal(err)
			}
			r := <-got
			now := pgtest.Now(t, b.admin)
			if r.GetOwnerId() != "b" {
				t.Fatalf("b, claiming after a's lease expired, was told owner %q", r.GetOwnerId())
			}
			if exp := r.GetExpiresAt().AsTime(); !exp.After(now) {
				t.Fatalf("b was granted a lease that expired at %v, before the answer arrived (%v): %v ago", exp, now, now.Sub(exp))
			}
			if r := claimOwner(t, c, key, "c", heartbeat); r.GetOwnerId() != "b" {
				t.Fatalf("c claimed right after b's grant and was told owner %q: two owners", r.GetOwnerId())
			}
		})
	}
	t.Cleanup(func() { b.assertNoServerErrors(t) })
}

// TestTinyHeartbeatIsInvalid: a heartbeat of a nanosecond (or anything
// below --min-heartbeat, 100ms by default) used to be granted, expiring on
// grant. It is invalid_argument naming heartbeat_interval, and stores
// nothing.
func TestTinyHeartbeatIsInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	for name, c := range b.clients() {
		for _, d := range []time.Duration{time.Nanosecond, 99 * time.Millisecond} {
			_, err := c.GetOrExtendReservation(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
				Scope: scope(), Key: "tiny", OwnerId: "w", HeartbeatInterval: durationpb.New(d),
			}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "heartbeat_interval") {
				t.Errorf("%s, heartbeat %v: err = %v, want invalid_argument naming heartbeat_interval", name, d, err)
			}
		}
	}
	b.assertEmpty(t)
}

// TestReplicasFollowTheDatabaseClock runs two in-process replicas on one
// database and moves only the database's clock: both refuse a second owner
// until that clock passes the lease, then both agree on the new owner. No
// Go clock takes part in the decision (the manager has none to skew), so
// replicas whose own clocks disagree cannot hand out the same key.
func TestReplicasFollowTheDatabaseClock(t *testing.T) {
	t.Parallel()
	one := setup(t, manager.DefaultConfig())
	url := one.store.Pool().Config().ConnString()
	two := setupOn(t, url)
	c1, c2 := one.connectClient(), two.grpcClient()

	first := claimOwner(t, c1, "k", "a", time.Second) // 3s lease
	for i, c := range []cachev1connect.CacheServiceClient{c1, c2, c1, c2} {
		if r := claimOwner(t, c, "k", fmt.Sprint("w", i), time.Second); r.GetOwnerId() != "a" {
			t.Fatalf("replica %d gave a live lease to %q", i%2+1, r.GetOwnerId())
		}
	}
	pgtest.SetClockOffset(t, url, 4*time.Second, one.store.Pool(), two.store.Pool())
	if r := claimOwner(t, c2, "k", "b", time.Second); r.GetOwnerId() != "b" {
		t.Fatalf("after the database's clock passed %v, replica 2 answered owner %q, want b", first.GetExpiresAt().AsTime(), r.GetOwnerId())
	}
	if r := claimOwner(t, c1, "k", "a", time.Second); r.GetOwnerId() != "b" {
		t.Fatalf("replica 1 gave the reservation back to a: %v", r)
	}
}

// setupOn starts another in-process replica on the database at url.
func setupOn(t *testing.T, url string) *testBundle {
	t.Helper()
	return setup(t, manager.DefaultConfig(), func(c *store.Config) { c.URL = url })
}

// raceN runs fn for n clients at once behind one barrier.
func raceN(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}
