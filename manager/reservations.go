package manager

import (
	"context"
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
// The decision runs in a transaction that holds the reservation's row lock,
// so PostgreSQL serializes claimants across any number of replicas.
func (m *Manager) GetOrExtendReservation(ctx context.Context, now time.Time, req *cachev1.GetOrExtendReservationRequest) (*cachev1.GetOrExtendReservationResponse, error) {
	heartbeat, err := m.resolveHeartbeat(req.HeartbeatInterval)
	if err != nil {
		return nil, err
	}
	now = dbTime(now)
	claim := store.Reservation{
		ID:                idOf(req.GetScope(), req.GetKey()),
		OwnerID:           req.GetOwnerId(),
		HeartbeatInterval: heartbeat,
		ExpiresAt:         dbTime(now.Add(time.Duration(float64(heartbeat) * m.cfg.GraceMultiplier))),
	}
	var held store.Reservation
	var outcome Outcome
	err = m.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		current, created, err := tx.LockReservation(ctx, claim)
		if err != nil {
			return err
		}
		held, outcome = current, claimOutcome(current, created, claim.OwnerID, now)
		if created || outcome == OutcomeHeldByAnother {
			return nil
		}
		held = claim
		return tx.UpdateReservation(ctx, claim)
	})
	if err != nil {
		return nil, m.toConnectError(ctx, "get or extend reservation", err)
	}
	m.observer.ObserveReservation(outcome)
	return &cachev1.GetOrExtendReservationResponse{Reservation: &cachev1.Reservation{
		Key:               held.ID.Key,
		OwnerId:           held.OwnerID,
		HeartbeatInterval: durationpb.New(held.HeartbeatInterval),
		ExpiresAt:         timestamppb.New(held.ExpiresAt),
	}}, nil
}

// claimOutcome decides what a claim by owner does to the reservation current
// (created: it was inserted by this claim). Owner may take or keep it when it
// holds it already or the holder's time ran out.
func claimOutcome(current store.Reservation, created bool, owner string, now time.Time) Outcome {
	switch {
	case created:
		return OutcomeAcquired
	case current.OwnerID == owner:
		return OutcomeExtended
	case !current.ExpiresAt.After(now):
		return OutcomeTakenOver
	default:
		return OutcomeHeldByAnother
	}
}

// resolveHeartbeat applies the server's maximum: unset or above it gives the
// maximum; an explicit zero or negative interval is invalid.
func (m *Manager) resolveHeartbeat(requested *durationpb.Duration) (time.Duration, error) {
	if requested == nil {
		return m.cfg.MaxHeartbeat, nil
	}
	d, err := positiveDuration("heartbeat_interval", requested)
	if err != nil {
		return 0, err
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
