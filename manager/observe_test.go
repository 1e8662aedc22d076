package manager_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu        sync.Mutex
	lookups   []bool
	outcomes  []manager.Outcome
	sweeps    []manager.SweepResult
	sweepErrs []error
}

func (r *recorder) ObserveLookup(hit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups = append(r.lookups, hit)
}

func (r *recorder) takeLookups() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lookups
	r.lookups = nil
	return out
}

func (r *recorder) ObserveReservation(o manager.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes = append(r.outcomes, o)
}

func (r *recorder) ObserveSweep(res manager.SweepResult, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweeps = append(r.sweeps, res)
	r.sweepErrs = append(r.sweepErrs, err)
}

func (r *recorder) takeOutcomes() []manager.Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.outcomes
	r.outcomes = nil
	return out
}

func (r *recorder) sweepCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sweeps)
}

// observedBundle is a testBundle whose manager reports to a recorder, with
// the raw pool for seeding and inspecting rows directly.
type observedBundle struct {
	*testBundle
	rec  *recorder
	pool *pgxpool.Pool
}

func setupObserved(t *testing.T) *observedBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 40, Timeout: 30 * time.Second, LockTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	rec := &recorder{}
	cfg := manager.DefaultConfig()
	m := manager.New(st, cfg, nil, manager.WithObserver(rec))
	return &observedBundle{testBundle: &testBundle{ctx: t.Context(), manager: m, cfg: cfg, store: st, url: url, clock: pgtest.Clock{URL: url, Pool: st.Pool()}}, rec: rec, pool: st.Pool()}
}

func TestReservationOutcomesAreObserved(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	hb := durationpb.New(time.Second) // expires 3s after each claim
	steps := []struct {
		name string
		do   func()
		want manager.Outcome
	}{
		{"first claim", func() { b.claim(t, "k", "w1", hb) }, manager.OutcomeAcquired},
		{"holder claims again", func() { b.claim(t, "k", "w1", hb) }, manager.OutcomeExtended},
		{"another claims in time", func() { b.claim(t, "k", "w2", hb) }, manager.OutcomeHeldByAnother},
		{"another claims after expiry", func() { b.clock.Shift(t, time.Minute); b.claim(t, "k", "w2", hb) }, manager.OutcomeTakenOver},
		{"old holder releases", func() { b.release(t, "k", "w1") }, manager.OutcomeReleaseNotHeld},
		{"holder releases", func() { b.release(t, "k", "w2") }, manager.OutcomeReleased},
		{"release of nothing", func() { b.release(t, "k", "w2") }, manager.OutcomeReleaseNotHeld},
	}
	for _, step := range steps {
		step.do()
		if got := b.rec.takeOutcomes(); !slices.Equal(got, []manager.Outcome{step.want}) {
			t.Errorf("%s: observed %v, want [%v]", step.name, got, step.want)
		}
	}
}

// TestLockTimeoutIsUnavailableAndObserved holds a reservation row from
// another session: the holder's claim on it gives up after the store's lock timeout
// with unavailable and a message that says to retry and leaks nothing, and
// the observer counts it as lock_timeout (issue 8, defect 10).
func TestLockTimeoutIsUnavailableAndObserved(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	st, err := store.Open(t.Context(), store.Config{URL: url, Timeout: time.Minute, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	rec := &recorder{}
	b := &testBundle{ctx: t.Context(), manager: manager.New(st, manager.DefaultConfig(), nil, manager.WithObserver(rec)), store: st, url: url, clock: pgtest.Clock{URL: url, Pool: st.Pool()}}
	b.claim(t, "k", "w1", nil)
	rec.takeOutcomes()

	tx, err := st.Pool().Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // ends the outside lock
	if _, err := tx.Exec(b.ctx, "SELECT 1 FROM reservations WHERE key = 'k' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	// The holder's extension needs the lock (another claimant would be
	// answered without it).
	_, err = b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: "k", OwnerId: "w1"})
	wantCode(t, err, connect.CodeUnavailable)
	if msg := err.Error(); !strings.Contains(msg, "retry") || strings.Contains(msg, "lock_timeout") || strings.Contains(msg, "SQLSTATE") {
		t.Errorf("message %q: want a safe one that says to retry", msg)
	}
	if got := rec.takeOutcomes(); !slices.Equal(got, []manager.Outcome{manager.OutcomeLockTimeout}) {
		t.Errorf("observed %v, want [lock_timeout]", got)
	}
}

func TestLookupsAreObservedAsHitOrMiss(t *testing.T) {
	t.Parallel()
	b := setupObserved(t)
	get := func(ctx context.Context) error {
		_, err := b.manager.Get(ctx, &cachev1.GetRequest{Scope: scope(), Key: "k"})
		return err
	}
	if err := get(b.ctx); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get missing: %v", err)
	}
	if got := b.rec.takeLookups(); !slices.Equal(got, []bool{false}) {
		t.Errorf("after a miss: observed %v, want [false]", got)
	}
	if err := b.put(t, &cachev1.PutRequest{Scope: scope(), Key: "k",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://b/k"}}}); err != nil {
		t.Fatal(err)
	}
	if err := get(b.ctx); err != nil {
		t.Fatalf("get stored: %v", err)
	}
	if got := b.rec.takeLookups(); !slices.Equal(got, []bool{true}) {
		t.Errorf("after a hit: observed %v, want [true]", got)
	}
	// A Get the database never answered is neither.
	ctx, cancel := context.WithCancel(b.ctx)
	cancel()
	if err := get(ctx); connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("get with a cancelled context: %v", err)
	}
	if got := b.rec.takeLookups(); len(got) != 0 {
		t.Errorf("after a cancelled Get: observed %v, want nothing", got)
	}
}
