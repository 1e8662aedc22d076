package metrics_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/metricstest"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/metrics"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, store.Migrate))
}

type testBundle struct {
	ctx        context.Context
	client     cachev1connect.CacheServiceClient
	manager    *manager.Manager
	metricsURL string
	url        string
	store      *store.Store
	clock      pgtest.Clock // the database's clock, as the server's connections see it
}

// setup serves CacheService with the metrics interceptor and /metrics over a
// fresh database, as cmd wires them.
func setup(t *testing.T) *testBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 4, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	met := metrics.New()
	met.WatchPool(st.Pool())
	m := manager.New(st, manager.DefaultConfig(), nil, manager.WithObserver(met))
	mux := http.NewServeMux()
	mux.Handle("/", service.NewEdge(m, service.Options{Interceptors: []connect.Interceptor{met.Interceptor()}}))
	mux.Handle("/metrics", met.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testBundle{
		ctx:        t.Context(),
		client:     cachev1connect.NewCacheServiceClient(srv.Client(), srv.URL),
		manager:    m,
		metricsURL: srv.URL + "/metrics",
		url:        url,
		store:      st,
		clock:      pgtest.Clock{URL: url, Pool: st.Pool()},
	}
}

var testScope = &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}

func TestRPCMetricsCountCodesLatencyAndLookups(t *testing.T) {
	t.Parallel()
	b := setup(t)
	get := cachev1connect.CacheServiceGetProcedure
	put := cachev1connect.CacheServicePutProcedure
	before := metricstest.Scrape(t, b.metricsURL)
	for _, want := range []string{"hit", "miss"} {
		if v := before.Get(t, "cacheservice_cache_lookups_total", "result", want); v != 0 {
			t.Errorf("lookups %s = %v before any call, want 0", want, v)
		}
	}

	_, err := b.client.Get(b.ctx, connect.NewRequest(&cachev1.GetRequest{Scope: testScope, Key: "k"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get missing: %v", err)
	}
	_, err = b.client.Put(b.ctx, connect.NewRequest(&cachev1.PutRequest{Scope: testScope, Key: "k",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://b/k"}}}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := b.client.Get(b.ctx, connect.NewRequest(&cachev1.GetRequest{Scope: testScope, Key: "k"})); err != nil {
			t.Fatal(err)
		}
	}
	// Rejected by validation, which runs inside the metrics interceptor.
	_, err = b.client.Get(b.ctx, connect.NewRequest(&cachev1.GetRequest{Key: "k"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("get without scope: %v", err)
	}

	after := metricstest.Scrape(t, b.metricsURL)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cacheservice_rpc_requests_total", []string{"procedure", get, "code", "not_found"}, 1},
		{"cacheservice_rpc_requests_total", []string{"procedure", get, "code", "ok"}, 2},
		{"cacheservice_rpc_requests_total", []string{"procedure", get, "code", "invalid_argument"}, 1},
		{"cacheservice_rpc_requests_total", []string{"procedure", put, "code", "ok"}, 1},
		{"cacheservice_rpc_request_duration_seconds_count", []string{"procedure", get}, 4},
		{"cacheservice_rpc_request_duration_seconds_count", []string{"procedure", put}, 1},
		{"cacheservice_cache_lookups_total", []string{"result", "hit"}, 2},
		{"cacheservice_cache_lookups_total", []string{"result", "miss"}, 1},
	}
	for _, c := range checks {
		if got := after.Get(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s = %v, want %v", metricstest.Key(c.name, c.labels...), got, c.want)
		}
	}
	if got := after.Get(t, "cacheservice_rpc_request_duration_seconds_sum", "procedure", get); got <= 0 {
		t.Errorf("Get latency sum = %v, want > 0", got)
	}
}

func TestReservationOutcomeMetricsFollowCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	claim := func(owner string) {
		t.Helper()
		if _, err := b.client.GetOrExtendReservation(b.ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: testScope, Key: "k", OwnerId: owner})); err != nil {
			t.Fatal(err)
		}
	}
	release := func(owner string) {
		t.Helper()
		if _, err := b.client.ReleaseReservation(b.ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: testScope, Key: "k", OwnerId: owner})); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		do      func()
		outcome manager.Outcome
	}{
		{func() { claim("w1") }, manager.OutcomeAcquired},
		{func() { claim("w1") }, manager.OutcomeExtended},
		{func() { claim("w2") }, manager.OutcomeHeldByAnother},
		{func() { release("w2") }, manager.OutcomeReleaseNotHeld},
		{func() { release("w1") }, manager.OutcomeReleased},
	}
	for _, step := range steps {
		before := metricstest.Scrape(t, b.metricsURL)
		step.do()
		after := metricstest.Scrape(t, b.metricsURL)
		for _, o := range manager.Outcomes() {
			want := 0.0
			if o == step.outcome {
				want = 1
			}
			name := "cacheservice_reservation_outcomes_total"
			if d := after.Get(t, name, "outcome", string(o)) - before.Get(t, name, "outcome", string(o)); d != want {
				t.Errorf("after a call that was %s: %s moved by %v, want %v", step.outcome, o, d, want)
			}
		}
	}
	// Taking over needs an expired reservation, hence a moved clock.
	if _, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{Scope: testScope, Key: "old", OwnerId: "dead"}); err != nil {
		t.Fatal(err)
	}
	before := metricstest.Scrape(t, b.metricsURL).Get(t, "cacheservice_reservation_outcomes_total", "outcome", "taken_over")
	b.clock.Shift(t, time.Hour)
	if _, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{Scope: testScope, Key: "old", OwnerId: "w3"}); err != nil {
		t.Fatal(err)
	}
	if after := metricstest.Scrape(t, b.metricsURL).Get(t, "cacheservice_reservation_outcomes_total", "outcome", "taken_over"); after-before != 1 {
		t.Errorf("taken_over moved by %v, want 1", after-before)
	}
}

func TestSweepMetricsCountDeletedRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	b.clock.Shift(t, -48*time.Hour)
	if _, err := b.manager.Put(b.ctx, &cachev1.PutRequest{Scope: testScope, Key: "e",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	b.clock.Shift(t, -2*time.Hour)
	for _, key := range []string{"a", "b"} {
		if _, err := b.manager.GetOrExtendReservation(b.ctx, &cachev1.GetOrExtendReservationRequest{Scope: testScope, Key: key, OwnerId: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.Shift(t, 0)
	if _, err := b.manager.Sweep(b.ctx, manager.SweepConfig{ReservationRetention: time.Hour, EntryTTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	s := metricstest.Scrape(t, b.metricsURL)
	if got := s.Get(t, "cacheservice_sweep_deleted_total", "kind", "reservations"); got != 2 {
		t.Errorf("reservations swept = %v, want 2", got)
	}
	if got := s.Get(t, "cacheservice_sweep_deleted_total", "kind", "entries"); got != 1 {
		t.Errorf("entries swept = %v, want 1", got)
	}
	if got := s.Get(t, "cacheservice_sweep_passes_total", "result", "ok"); got != 1 {
		t.Errorf("ok passes = %v, want 1", got)
	}
	if got := s.Get(t, "cacheservice_sweep_last_success_timestamp_seconds"); got < float64(now.Unix()) {
		t.Errorf("last success = %v, want at least %v", got, now.Unix())
	}
}

func TestPoolMetricsReadThePool(t *testing.T) {
	t.Parallel()
	b := setup(t)
	before := metricstest.Scrape(t, b.metricsURL).Get(t, "cacheservice_db_pool_acquires_total")
	for range 3 {
		_, _ = b.client.Get(b.ctx, connect.NewRequest(&cachev1.GetRequest{Scope: testScope, Key: "k"}))
	}
	s := metricstest.Scrape(t, b.metricsURL)
	if got := s.Get(t, "cacheservice_db_pool_acquires_total"); got-before != 3 {
		t.Errorf("acquires moved by %v over 3 Gets, want 3", got-before)
	}
	if got := s.Get(t, "cacheservice_db_pool_max_connections"); got != 4 {
		t.Errorf("max connections = %v, want 4", got)
	}
	if got := s.Get(t, "cacheservice_db_pool_connections_created_total"); got < 1 {
		t.Errorf("connections created = %v, want at least 1", got)
	}
	idle, acquired := s.Get(t, "cacheservice_db_pool_connections", "state", "idle"), s.Get(t, "cacheservice_db_pool_connections", "state", "acquired")
	if idle < 1 || acquired != 0 {
		t.Errorf("connections idle=%v acquired=%v between requests, want idle ≥ 1 and none acquired", idle, acquired)
	}
}

// TestEmbeddedPostgresMetricsFollowTheServer runs its own cluster, since it
// stops and restarts it.
func TestEmbeddedPostgresMetricsFollowTheServer(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	met := metrics.New()
	met.WatchEmbeddedPostgres(pg)
	srv := httptest.NewServer(met.Handler())
	t.Cleanup(srv.Close)
	want := func(step string, up, starts float64) {
		t.Helper()
		s := metricstest.Scrape(t, srv.URL)
		if got := s.Get(t, "cacheservice_embedded_postgres_up"); got != up {
			t.Errorf("%s: up = %v, want %v", step, got, up)
		}
		if got := s.Get(t, "cacheservice_embedded_postgres_starts_total"); got != starts {
			t.Errorf("%s: starts = %v, want %v", step, got, starts)
		}
		if got := s.Get(t, "cacheservice_embedded_postgres_unexpected_exits_total"); got != 0 {
			t.Errorf("%s: unexpected exits = %v, want 0", step, got)
		}
	}
	want("running", 1, 1)
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	want("stopped", 0, 1)
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	want("restarted", 1, 2)
}
