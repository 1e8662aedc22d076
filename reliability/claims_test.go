package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
)

// TestReplicasKeepOneOwnerWhileLiveAndAtTakeover has 64 clients spread
// over three in-process replicas on one database claim a key that holder
// "h" holds, all at once, h among them: while the lease is live every
// claimant (answered from a plain read, and h by the one statement that
// extends its own live lease) is told h, and h keeps it. Then the
// database's clock passes the lease and the 64 race again: exactly one
// takes over (h, when it races, may win too: it claims as an owner whose
// lease ran out), and every one is told that owner. Trial after trial,
// never two owners.
func TestReplicasKeepOneOwnerWhileLiveAndAtTakeover(t *testing.T) {
	t.Parallel()
	// The longest heartbeat: a lease of 30s, so that one race, however
	// slow on a loaded machine, ends before the lease it grants does (a
	// lease that ran out mid-race could rightly be taken over again).
	heartbeat := manager.DefaultConfig().MaxHeartbeat
	one := setup(t, manager.DefaultConfig())
	url := one.store.Pool().Config().ConnString()
	replicas := []*testBundle{one, setupOn(t, url), setupOn(t, url)}
	clients := make([]cachev1connect.CacheServiceClient, claimants)
	for i := range clients {
		r := replicas[i%len(replicas)]
		if (i/len(replicas))%2 == 0 {
			clients[i] = r.connectClient()
		} else {
			clients[i] = r.grpcClient()
		}
	}
	// Client 0 claims as h, except in the takeover race of odd trials, so
	// that a takeover by someone else is seen as well as h's own.
	hRaces := true
	owner := func(i int) string {
		if i == 0 && hRaces {
			return "h"
		}
		return fmt.Sprintf("worker-%d", i)
	}
	claimAll := func(key string) []string {
		owners := make([]string, claimants)
		errs := make([]error, claimants)
		raceN(claimants, func(i int) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := clients[i].GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
				Scope: scope(), Key: key, OwnerId: owner(i), HeartbeatInterval: durationpb.New(heartbeat),
			}))
			errs[i] = err
			if err == nil {
				owners[i] = res.Msg.GetReservation().GetOwnerId()
			}
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("key %s, client %d: %v", key, i, err)
			}
		}
		return owners
	}

	trials := pick(8, 60)
	var offset time.Duration
	for trial := range trials {
		key := fmt.Sprintf("takeover-%d", trial)
		claimOwner(t, clients[trial%claimants], key, "h", heartbeat)
		hRaces = true

		for i, o := range claimAll(key) {
			if o != "h" {
				t.Fatalf("trial %d, live lease: client %d was told owner %q, want h", trial, i, o)
			}
		}

		offset += time.Hour // past every lease granted so far
		pgtest.SetClockOffset(t, url, offset, one.pool, replicas[1].pool, replicas[2].pool, one.admin)
		hRaces = trial%2 == 0
		owners := claimAll(key)
		winners := 0
		for i, o := range owners {
			if o != owners[0] {
				t.Fatalf("trial %d, takeover: client %d was told %q, client 0 %q", trial, i, o, owners[0])
			}
			if o == owner(i) {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("trial %d, takeover: %d clients own the reservation, want 1 (owner %q)", trial, winners, owners[0])
		}
		// Whoever won holds a live lease: the database agrees.
		var stored string
		if err := one.admin.QueryRow(t.Context(),
			"SELECT owner_id FROM reservations WHERE key = $1 AND expires_at > cache_now()", key).Scan(&stored); err != nil || stored != owners[0] {
			t.Fatalf("trial %d: stored live owner %q (%v), want %q", trial, stored, err, owners[0])
		}
	}
	t.Logf("%d trials × %d claimants over 3 replicas, live and at takeover: one owner each time", trials, claimants)
}
