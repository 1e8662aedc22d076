package manager

import (
	"context"
	"errors"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/store"
)

// GetOrExtendReservation makes owner_id the holder of the key's reservation
// when there is none, when it has expired, or when owner_id holds it
// already, and sets it to expire after heartbeat × grace multiplier.
// Otherwise it returns the current holder's reservation unchanged.
//
// A claimant that finds the key live and held by another is answered from
// a plain read, without the row lock, so the many waiters of a busy key do
// not queue behind one another. A claim that may become or stay the owner
// runs in a transaction that holds the reservation's row lock, so
// PostgreSQL serializes claimants across any number of replicas. Whether
// the holder's lease has expired, and when the new one ends, are decided by
// the database's clock (after the lock is held, when one is taken;
// store.Store.ClaimReservation): a claim that waited for the lock is never
// granted a lease that ran out while it waited, and replicas whose clocks
// disagree still agree on who owns it.
func (m *Manager) GetOrExtendReservation(ctx context.Context, req *cachev1.GetOrExtendReservationRequest) (*cachev1.GetOrExtendReservationResponse, error) {
	heartbeat, err := m.resolveHeartbeat(req.HeartbeatInterval)
	if err != nil {
		return nil, err
	}
	claim := store.Claim{
		ID:                idOf(req.GetScope(), req.GetKey()),
		OwnerID:           req.GetOwnerId(),
		HeartbeatInterval: heartbeat,
		Lease:             lease(heartbeat, m.cfg.GraceMultiplier),
	}
	res, err := m.store.ClaimReservation(ctx, claim)
	if err != nil {
		if errors.Is(err, store.ErrLockTimeout) {
			m.observer.ObserveReservation(OutcomeLockTimeout)
		}
		return nil, m.toConnectError(ctx, "get or extend reservation", err)
	}
	m.observer.ObserveReservation(claimOutcome(res, claim.OwnerID))
	held := res.Current
	return &cachev1.GetOrExtendReservationResponse{Reservation: &cachev1.Reservation{
		Key:               held.ID.Key,
		OwnerId:           held.OwnerID,
		HeartbeatInterval: durationpb.New(held.HeartbeatInterval),
		ExpiresAt:         timestamppb.New(held.ExpiresAt),
	}}, nil
}

// claimOutcome names what a claim by owner did.
func claimOutcome(res store.ClaimResult, owner string) Outcome {
	switch {
	case res.Created:
		return OutcomeAcquired
	case !res.Granted:
		return OutcomeHeldByAnother
	case res.Previous.OwnerID == owner:
		return OutcomeExtended
	default:
		return OutcomeTakenOver
	}
}

// lease is heartbeat × grace, saturating at the longest time.Duration
// instead of wrapping: whatever the flags, a lease never ends before it
// starts.
func lease(heartbeat time.Duration, grace float64) time.Duration {
	l := float64(heartbeat) * grace
	switch {
	case l >= math.MaxInt64 || math.IsNaN(l):
		return math.MaxInt64
	case l < 0:
		return 0
	}
	return time.Duration(l)
}

// resolveHeartbeat applies the server's bounds: unset or above the maximum
// gives the maximum; an explicit interval below the minimum (zero and
// negative included) is invalid.
func (m *Manager) resolveHeartbeat(requested *durationpb.Duration) (time.Duration, error) {
	if requested == nil {
		return m.cfg.MaxHeartbeat, nil
	}
	if err := requested.CheckValid(); err != nil {
		return 0, invalidArgument("heartbeat_interval", "is not a valid duration")
	}
	d := requested.AsDuration()
	if d < m.cfg.MinHeartbeat {
		return 0, invalidArgument("heartbeat_interval", "must be at least %v, got %v", m.cfg.MinHeartbeat, d)
	}
	return min(d, m.cfg.MaxHeartbeat), nil
}

// positiveDuration converts a set duration field, rejecting malformed, zero
// and negative values by field name.
func positiveDuration(field string, d *durationpb.Duration) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, invalidArgument(field, "is not a valid duration")
	}
	v := d.AsDuration()
	if v <= 0 {
		return 0, invalidArgument(field, "must be greater than zero")
	}
	return v, nil
}

// ReleaseReservation deletes the reservation if owner_id holds it. A missing
// reservation, or another owner's, is left as it is and the call succeeds:
// clients release unconditionally in cleanup paths.
func (m *Manager) ReleaseReservation(ctx context.Context, req *cachev1.ReleaseReservationRequest) (*cachev1.ReleaseReservationResponse, error) {
	released, err := m.store.ReleaseReservation(ctx, idOf(req.GetScope(), req.GetKey()), req.GetOwnerId())
	if err != nil {
		return nil, m.toConnectError(ctx, "release reservation", err)
	}
	if released {
		m.observer.ObserveReservation(OutcomeReleased)
	} else {
		m.observer.ObserveReservation(OutcomeReleaseNotHeld)
	}
	return &cachev1.ReleaseReservationResponse{}, nil
}
