package main

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/metricstest"
)

// TestMetricsMoveForTheirCalls scrapes /metrics of a real server before
// and after a few calls and checks that each counter moved by exactly the
// calls that count for it.
func TestMetricsMoveForTheirCalls(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--sweep-interval=0")
	c := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON())
	sc := scope(t)
	before := metricstest.Scrape(t, srv.url+"/metrics")

	_, err := c.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: "k"}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := c.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
		Scope: sc, Key: "k", Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://b/k"}},
	})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: "k"})); err != nil {
			t.Fatal(err)
		}
	}
	reserve := func(owner string) {
		t.Helper()
		if _, err := c.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
			Scope: sc, Key: "r", OwnerId: owner,
		})); err != nil {
			t.Fatalf("GetOrExtendReservation(%s): %v", owner, err)
		}
	}
	reserve("a") // acquired
	reserve("a") // extended
	reserve("b") // held by another
	if _, err := c.ReleaseReservation(callCtx(t), connect.NewRequest(&cachev1.ReleaseReservationRequest{
		Scope: sc, Key: "r", OwnerId: "a",
	})); err != nil {
		t.Fatal(err)
	}

	after := metricstest.Scrape(t, srv.url+"/metrics")
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cacheservice_cache_lookups_total", []string{"result", "hit"}, 2},
		{"cacheservice_cache_lookups_total", []string{"result", "miss"}, 1},
		{"cacheservice_rpc_requests_total", []string{"code", "ok", "procedure", cachev1connect.CacheServiceGetProcedure}, 2},
		{"cacheservice_rpc_requests_total", []string{"code", "not_found", "procedure", cachev1connect.CacheServiceGetProcedure}, 1},
		{"cacheservice_rpc_requests_total", []string{"code", "ok", "procedure", cachev1connect.CacheServicePutProcedure}, 1},
		{"cacheservice_rpc_request_duration_seconds_count", []string{"procedure", cachev1connect.CacheServiceGetProcedure}, 3},
		{"cacheservice_reservation_outcomes_total", []string{"outcome", "acquired"}, 1},
		{"cacheservice_reservation_outcomes_total", []string{"outcome", "extended"}, 1},
		{"cacheservice_reservation_outcomes_total", []string{"outcome", "held_by_another"}, 1},
		{"cacheservice_reservation_outcomes_total", []string{"outcome", "released"}, 1},
		{"cacheservice_reservation_outcomes_total", []string{"outcome", "taken_over"}, 0},
	} {
		key := metricstest.Key(tt.name, tt.labels...)
		if got := after[key] - before[key]; got != tt.want {
			t.Errorf("%s moved by %v, want %v", key, got, tt.want)
		}
	}
	if after.Get(t, "cacheservice_db_pool_max_connections") != 10 {
		t.Errorf("cacheservice_db_pool_max_connections = %v, want 10", after["cacheservice_db_pool_max_connections"])
	}
}

// TestSweeperRunsInTheServer checks that the server's sweeper deletes an
// expired reservation and counts it.
func TestSweeperRunsInTheServer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--sweep-interval=50ms", "--reservation-retention=0s",
		"--max-heartbeat=100ms", "--grace-multiplier=1")
	c := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON())
	if _, err := c.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
		Scope: scope(t), Key: "r", OwnerId: "a", HeartbeatInterval: durationpb.New(100 * time.Millisecond),
	})); err != nil {
		t.Fatal(err)
	}
	key := metricstest.Key("cacheservice_sweep_deleted_total", "kind", "reservations")
	waitFor(t, 10*time.Second, key+" to reach 1", func() bool {
		return metricstest.Scrape(t, srv.url+"/metrics")[key] >= 1
	})
	if got := metricstest.Scrape(t, srv.url+"/metrics")[metricstest.Key("cacheservice_sweep_deleted_total", "kind", "entries")]; got != 0 {
		t.Errorf("sweeper deleted %v entries without --entry-ttl", got)
	}
}

// TestPProfOnlyWithTheFlag checks /debug/pprof/ is absent by default.
func TestPProfOnlyWithTheFlag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK},
	} {
		t.Run(fmt.Sprintf("%q", tt.args), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, tt.args...)
			if got := getStatus(t, srv.url+"/debug/pprof/"); got != tt.want {
				t.Errorf("with %q: GET /debug/pprof/ = %d, want %d", tt.args, got, tt.want)
			}
		})
	}
}

// TestMetricsAddrMovesMetricsAndPProf checks that --metrics-addr serves
// /metrics and pprof on their own listener and not on the API port.
func TestMetricsAddrMovesMetricsAndPProf(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := startServer(t, "--metrics-addr", addr, "--pprof")
	for url, want := range map[string]int{
		"http://" + addr + "/metrics":      http.StatusOK,
		"http://" + addr + "/debug/pprof/": http.StatusOK,
		srv.url + "/metrics":               http.StatusNotFound,
		srv.url + "/debug/pprof/":          http.StatusNotFound,
	} {
		if got := getStatus(t, url); got != want {
			t.Errorf("GET %s = %d, want %d", url, got, want)
		}
	}
}

// TestReadyz checks the plain HTTP readiness probe.
func TestReadyz(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	if got := getStatus(t, srv.url+"/readyz"); got != http.StatusOK {
		t.Errorf("GET /readyz = %d, want 200", got)
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http1Client(t).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
