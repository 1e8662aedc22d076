package reliability

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
)

// TestOwnerThatStopsHeartbeatingLosesReservationInRealTime runs the
// reservation protocol against the wall clock: heartbeats keep a
// reservation past its first grace period; once they stop, it lapses after
// heartbeat × grace and no sooner; another owner takes it; the first owner's
// late extension learns it no longer owns it, and its release changes
// nothing.
func TestOwnerThatStopsHeartbeatingLosesReservationInRealTime(t *testing.T) {
	t.Parallel()
	const heartbeat, grace = 200 * time.Millisecond, 3
	b := setup(t, manager.Config{MaxHeartbeat: 10 * time.Second, GraceMultiplier: grace})
	for name, c := range b.clients() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := "expiry-" + name
			claim := func(owner string) *cachev1.Reservation {
				t.Helper()
				res, err := c.GetOrExtendReservation(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
					Scope: scope(), Key: key, OwnerId: owner, HeartbeatInterval: durationpb.New(heartbeat),
				}))
				if err != nil {
					t.Fatalf("claim by %s: %v", owner, err)
				}
				return res.Msg.GetReservation()
			}
			if r := claim("a"); r.GetOwnerId() != "a" {
				t.Fatalf("first claim went to %q", r.GetOwnerId())
			}
			// Heartbeat for three grace periods; b never gets in.
			var last time.Time
			for end := time.Now().Add(3 * grace * heartbeat); time.Now().Before(end); time.Sleep(heartbeat / 2) {
				last = time.Now()
				r := claim("a")
				if r.GetOwnerId() != "a" {
					t.Fatalf("heartbeating owner lost the reservation to %q", r.GetOwnerId())
				}
				if got := r.GetExpiresAt().AsTime().Sub(last); got < grace*heartbeat-50*time.Millisecond || got > grace*heartbeat+time.Second {
					t.Fatalf("expires_at is %v after the heartbeat, want about %v", got, grace*heartbeat)
				}
				if r := claim("b"); r.GetOwnerId() != "a" {
					t.Fatalf("b took a live reservation")
				}
			}
			// a stops. b polls (bounded) until it owns.
			var took time.Duration
			for i := 0; ; i++ {
				if i == 200 {
					t.Fatalf("b never got the reservation %v after a stopped", time.Since(last))
				}
				before := time.Now()
				if claim("b").GetOwnerId() == "b" {
					took = before.Sub(last)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if took < grace*heartbeat-50*time.Millisecond || took > grace*heartbeat+time.Second {
				t.Fatalf("b got the reservation %v after a's last heartbeat, want about %v", took, grace*heartbeat)
			}
			if r := claim("a"); r.GetOwnerId() != "b" {
				t.Fatalf("a's late extension answered owner %q, want b", r.GetOwnerId())
			}
			release(t, c, key, "a")
			if r := claim("c"); r.GetOwnerId() != "b" {
				t.Fatalf("after a's release the owner is %q, want b", r.GetOwnerId())
			}
			t.Logf("reservation lapsed %v after the last heartbeat (grace %v)", took, grace*heartbeat)
		})
	}
	t.Cleanup(func() { b.assertNoServerErrors(t) })
}

func release(t *testing.T, c cachev1connect.CacheServiceClient, key, owner string) {
	t.Helper()
	_, err := c.ReleaseReservation(t.Context(), connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: scope(), Key: key, OwnerId: owner}))
	if err != nil {
		t.Fatalf("release by %s: %v", owner, err)
	}
}
