package manager_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// claim asks for key's reservation as owner, with heartbeat (nil for
// unset).
func (b *testBundle) claim(t *testing.T, key, owner string, heartbeat *durationpb.Duration) *cachev1.Reservation {
	t.Helper()
	res, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{
		Scope: scope(), Key: key, OwnerId: owner, HeartbeatInterval: heartbeat,
	})
	if err != nil {
		t.Fatalf("claim %q by %q: %v", key, owner, err)
	}
	return res.GetReservation()
}

func (b *testBundle) release(t *testing.T, key, owner string) {
	t.Helper()
	if _, err := b.manager.ReleaseReservation(b.ctx, &cachev1.ReleaseReservationRequest{Scope: scope(), Key: key, OwnerId: owner}); err != nil {
		t.Fatalf("release %q by %q: %v", key, owner, err)
	}
}

func TestFirstClaimOwnsWithGraceExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.clock.Shift(t, -1000*time.Hour) // the lease runs on the database's clock, not ours
	before := b.clock.Now(t)
	r := b.claim(t, "k", "w1", durationpb.New(2*time.Second))
	after := b.clock.Now(t)
	if r.GetOwnerId() != "w1" || r.GetKey() != "k" {
		t.Fatalf("reservation = %v, want owner w1 of k", r)
	}
	if got := r.GetHeartbeatInterval().AsDuration(); got != 2*time.Second {
		t.Errorf("heartbeat = %v, want 2s", got)
	}
	wantBetween(t, "expires_at (now + 2s × 3)", r.GetExpiresAt().AsTime(), before.Add(6*time.Second), after.Add(6*time.Second))
}

func TestClaimHeldByAnotherReturnsItUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.claim(t, "k", "w1", durationpb.New(time.Second))
	b.clock.Shift(t, 2*time.Second)
	second := b.claim(t, "k", "w2", durationpb.New(5*time.Second))
	if second.GetOwnerId() != "w1" {
		t.Fatalf("owner = %q, want w1", second.GetOwnerId())
	}
	if !second.GetExpiresAt().AsTime().Equal(first.GetExpiresAt().AsTime()) || second.GetHeartbeatInterval().AsDuration() != time.Second {
		t.Fatalf("holder's reservation changed: %v, was %v", second, first)
	}
}

func TestSameOwnerExtends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claim(t, "k", "w1", durationpb.New(time.Second))
	b.clock.Shift(t, 2500*time.Millisecond) // within the 3s grace
	before := b.clock.Now(t)
	r := b.claim(t, "k", "w1", durationpb.New(time.Second))
	if r.GetOwnerId() != "w1" {
		t.Fatalf("extended reservation = %v, want w1's", r)
	}
	wantBetween(t, "extended expires_at", r.GetExpiresAt().AsTime(), before.Add(3*time.Second), b.clock.Now(t).Add(3*time.Second))
}

// TestExpiredReservationIsTakenOver moves the database's clock past a
// holder's expiry (3s after its claim) or just short of it. The clock
// keeps running, so each side keeps a margin of a second.
func TestExpiredReservationIsTakenOver(t *testing.T) {
	t.Parallel()
	cases := map[string]time.Duration{
		"just after expires_at": 4 * time.Second,
		"long after expires_at": time.Minute,
	}
	for name, elapsed := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.claim(t, "k", "w1", durationpb.New(time.Second))
			b.clock.Shift(t, elapsed)
			before := b.clock.Now(t)
			r := b.claim(t, "k", "w2", durationpb.New(time.Second))
			if r.GetOwnerId() != "w2" {
				t.Fatalf("reservation = %v, want w2's", r)
			}
			wantBetween(t, "taken-over expires_at", r.GetExpiresAt().AsTime(), before.Add(3*time.Second), b.clock.Now(t).Add(3*time.Second))
			// The old owner, coming back, learns it no longer owns it.
			if r := b.claim(t, "k", "w1", durationpb.New(time.Second)); r.GetOwnerId() != "w2" {
				t.Fatalf("old owner got %v back", r)
			}
		})
	}
	t.Run("just before expires_at", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.claim(t, "k", "w1", durationpb.New(time.Second))
		b.clock.Shift(t, 2*time.Second)
		if r := b.claim(t, "k", "w2", nil); r.GetOwnerId() != "w1" {
			t.Fatalf("reservation taken over before it expired: %v", r)
		}
	})
}

func TestHeartbeatResolution(t *testing.T) {
	t.Parallel()
	cfg := manager.Config{MaxHeartbeat: 10 * time.Second, MinHeartbeat: time.Millisecond, GraceMultiplier: 2}
	b := setupWith(t, cfg)
	cases := []struct {
		name      string
		requested *durationpb.Duration
		want      time.Duration
	}{
		{"unset gives the maximum", nil, 10 * time.Second},
		{"above the maximum gives the maximum", durationpb.New(time.Hour), 10 * time.Second},
		{"the maximum is kept", durationpb.New(10 * time.Second), 10 * time.Second},
		{"below the maximum is kept to the millisecond", durationpb.New(500 * time.Millisecond), 500 * time.Millisecond},
		{"sub-millisecond precision is kept", durationpb.New(1500 * time.Microsecond), 1500 * time.Microsecond},
		{"the minimum is allowed", durationpb.New(time.Millisecond), time.Millisecond},
	}
	for i, tc := range cases {
		key := fmt.Sprintf("k%d", i)
		before := b.clock.Now(t)
		r := b.claim(t, key, "w", tc.requested)
		if got := r.GetHeartbeatInterval().AsDuration(); got != tc.want {
			t.Errorf("%s: heartbeat = %v, want %v", tc.name, got, tc.want)
		}
		wantBetween(t, tc.name+": expires_at", r.GetExpiresAt().AsTime(), before.Add(2*tc.want), b.clock.Now(t).Add(2*tc.want))
	}
}

// TestHeartbeatBelowMinimumIsInvalid: a heartbeat set below --min-heartbeat
// (100ms by default; zero and negative included) is invalid_argument naming
// the field. A nanosecond used to be accepted, and expired on grant.
func TestHeartbeatBelowMinimumIsInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, d := range []time.Duration{0, -time.Second, time.Nanosecond, 99 * time.Millisecond} {
		_, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{
			Scope: scope(), Key: "k", OwnerId: "w", HeartbeatInterval: durationpb.New(d),
		})
		wantCode(t, err, connect.CodeInvalidArgument)
		if !strings.Contains(err.Error(), "heartbeat_interval") {
			t.Errorf("%v: message %q does not name heartbeat_interval", d, err)
		}
	}
	// Nothing was reserved: another owner gets it, and the minimum itself
	// is allowed.
	if r := b.claim(t, "k", "w2", durationpb.New(100*time.Millisecond)); r.GetOwnerId() != "w2" {
		t.Fatalf("an invalid claim left a reservation: %v", r)
	}
}

// TestLeaseSaturatesWithExtremeSettings builds a manager with settings that
// the flags refuse (issue 8, defect 4): heartbeat × grace is far beyond
// what time.Duration holds. The lease must saturate to the longest one,
// never wrap into the past, where every claimant would become owner.
func TestLeaseSaturatesWithExtremeSettings(t *testing.T) {
	t.Parallel()
	b := setupWith(t, manager.Config{MaxHeartbeat: 1000000 * time.Hour, GraceMultiplier: 1e10})
	r := b.claim(t, "k", "w1", nil)
	if min := b.clock.Now(t).Add(100 * 365 * 24 * time.Hour); !r.GetExpiresAt().AsTime().After(min) {
		t.Fatalf("expires_at = %v, want more than a century away", r.GetExpiresAt().AsTime())
	}
	if r := b.claim(t, "k", "w2", nil); r.GetOwnerId() != "w1" {
		t.Fatalf("a second claimant got %v: the lease wrapped into the past", r)
	}
}

func TestReleaseReservation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.claim(t, "k", "w1", nil)

	b.release(t, "k", "w2") // another owner's release succeeds and changes nothing
	if r := b.claim(t, "k", "w2", nil); r.GetOwnerId() != "w1" {
		t.Fatalf("a non-owner's release freed the reservation: %v", r)
	}
	b.release(t, "k", "w1")
	if r := b.claim(t, "k", "w2", nil); r.GetOwnerId() != "w2" {
		t.Fatalf("after the owner's release, w2 got %v", r)
	}
	b.release(t, "missing", "w1") // releasing nothing succeeds
}

// TestConcurrentClaimsExactlyOneOwner runs 64 claimants with different
// owner ids behind one barrier, on a new key and on an expired one, many
// times over: exactly one becomes the owner and every response names it.
func TestConcurrentClaimsExactlyOneOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const claimants, trials = 64, 15
	var offset time.Duration
	for trial := range trials {
		key := fmt.Sprintf("k%d", trial)
		if trial%2 == 1 {
			// An expired holder: everyone races to take over.
			b.claim(t, key, "dead-worker", durationpb.New(time.Second))
			offset += time.Minute
			b.clock.Shift(t, offset)
		}
		start := make(chan struct{})
		owners := make([]string, claimants)
		errs := make([]error, claimants)
		var wg sync.WaitGroup
		for c := range claimants {
			wg.Go(func() {
				<-start
				res, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{
					Scope: scope(), Key: key, OwnerId: fmt.Sprintf("w%d", c),
				})
				owners[c], errs[c] = res.GetReservation().GetOwnerId(), err
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for c := range claimants {
			if errs[c] != nil {
				t.Fatalf("trial %d claimant %d: %v", trial, c, errs[c])
			}
			if owners[c] != owners[0] {
				t.Fatalf("trial %d: claimants saw owners %q and %q", trial, owners[0], owners[c])
			}
			if owners[c] == fmt.Sprintf("w%d", c) {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("trial %d: %d claimants own the reservation, want 1", trial, winners)
		}
	}
}

func TestDatabaseDownIsUnavailableWithoutDetail(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.Context(), store.Config{URL: "postgres://cache:hunter2@127.0.0.1:1/cache?connect_timeout=2", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := manager.New(st, manager.DefaultConfig(), nil)
	ctx := t.Context()
	calls := map[string]error{}
	_, calls["get"] = m.Get(ctx, &cachev1.GetRequest{Scope: scope(), Key: "k"})
	_, calls["put"] = m.Put(ctx, &cachev1.PutRequest{Scope: scope(), Key: "k", Output: uriOutput("u")})
	_, calls["delete"] = m.Delete(ctx, &cachev1.DeleteRequest{Scope: scope(), Key: "k"})
	_, calls["claim"] = m.GetOrExtendReservation(ctx, &cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: "k", OwnerId: "w"})
	_, calls["release"] = m.ReleaseReservation(ctx, &cachev1.ReleaseReservationRequest{Scope: scope(), Key: "k", OwnerId: "w"})
	for name, err := range calls {
		wantCode(t, err, connect.CodeUnavailable)
		for _, secret := range []string{"hunter2", "127.0.0.1", "dial", "SQL", "pgx"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: message %q leaks %q", name, err, secret)
			}
		}
	}
}
