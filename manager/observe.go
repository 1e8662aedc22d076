package manager

// Outcome says what a reservation call did, for metrics.
type Outcome string

// The outcomes of GetOrExtendReservation and ReleaseReservation.
const (
	// OutcomeAcquired: the key had no reservation; the caller now holds it.
	OutcomeAcquired Outcome = "acquired"
	// OutcomeExtended: the caller held it already and pushed its expiry out.
	OutcomeExtended Outcome = "extended"
	// OutcomeTakenOver: another owner's reservation had expired; the caller
	// took it over.
	OutcomeTakenOver Outcome = "taken_over"
	// OutcomeHeldByAnother: another owner holds it; the caller should wait.
	OutcomeHeldByAnother Outcome = "held_by_another"
	// OutcomeReleased: the caller held it and released it.
	OutcomeReleased Outcome = "released"
	// OutcomeReleaseNotHeld: a release of a reservation the caller did not
	// hold (missing, or another's); nothing changed.
	OutcomeReleaseNotHeld Outcome = "release_not_held"
	// OutcomeLockTimeout: a claim gave up waiting for the reservation's row
	// lock (the store's lock timeout) and was answered unavailable.
	OutcomeLockTimeout Outcome = "lock_timeout"
)

// Outcomes lists every Outcome, so that a metrics backend can show zeros
// before the first event.
func Outcomes() []Outcome {
	return []Outcome{OutcomeAcquired, OutcomeExtended, OutcomeTakenOver, OutcomeHeldByAnother, OutcomeReleased, OutcomeReleaseNotHeld, OutcomeLockTimeout}
}

// Observer is told what the manager did. It is the manager's only view of
// metrics: the implementation lives at the edge (cmd wires one in), so the
// manager imports no metrics library. Methods run on the request path and
// must be cheap and never block.
type Observer interface {
	// ObserveLookup is called once for every Get that the database
	// answered: hit when it returned an output, miss when there was none.
	ObserveLookup(hit bool)
	// ObserveReservation is called once for every reservation call that
	// succeeded, after its transaction committed, and for every claim that
	// timed out waiting for the row lock (OutcomeLockTimeout).
	ObserveReservation(Outcome)
	// ObserveSweep is called after every sweep pass, with what it deleted
	// and the error that ended it early, if any.
	ObserveSweep(SweepResult, error)
}

// Option changes how New builds a Manager.
type Option func(*Manager)

// WithObserver reports what the manager does to o.
func WithObserver(o Observer) Option {
	return func(m *Manager) { m.observer = o }
}

// nopObserver is the Observer of a Manager built without one.
type nopObserver struct{}

func (nopObserver) ObserveLookup(bool)              {}
func (nopObserver) ObserveReservation(Outcome)      {}
func (nopObserver) ObserveSweep(SweepResult, error) {}
