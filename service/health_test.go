package service_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
)

type healthBundle struct {
	pg     *embeddedpg.Server
	store  *store.Store
	health *grpchealth.Client
	readyz string
	url    string // the edge's base URL
}

// setupHealth serves health over a PostgreSQL cluster of the test's own, so
// that stopping it disturbs no other test.
func setupHealth(t *testing.T, cfg service.ReadinessConfig) *healthBundle {
	t.Helper()
	pg := pgtest.StartServer(t)
	b := setupHealthOn(t, cfg, pg.ConnString(embeddedpg.DefaultDatabase))
	b.pg = pg
	return b
}

// setupHealthOn serves health over the database at url, for tests that
// leave PostgreSQL running.
func setupHealthOn(t *testing.T, cfg service.ReadinessConfig, url string) *healthBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 4, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	// HTTP/1.1 and unencrypted HTTP/2, so gRPC clients reach it too.
	srv := httptest.NewUnstartedServer(service.NewEdge(manager.New(st, manager.Config{}, nil), service.Options{Readiness: cfg}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return &healthBundle{store: st, health: grpchealth.NewClient(srv.Client(), srv.URL), readyz: srv.URL + "/readyz", url: srv.URL}
}

func (b *healthBundle) status(t *testing.T, service string) grpchealth.Status {
	t.Helper()
	res, err := b.health.Check(t.Context(), &grpchealth.CheckRequest{Service: service})
	if err != nil {
		t.Fatalf("check %q: %v", service, err)
	}
	return res.Status
}

func (b *healthBundle) readyzCode(t *testing.T) int {
	t.Helper()
	res, err := http.Get(b.readyz)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// waitStatus polls until health reports want, for at most limit.
func (b *healthBundle) waitStatus(t *testing.T, want grpchealth.Status, limit time.Duration) time.Duration {
	t.Helper()
	started := time.Now()
	for {
		got := b.status(t, "")
		if got == want {
			return time.Since(started)
		}
		if time.Since(started) > limit {
			t.Fatalf("health = %v after %v, want %v", got, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHealthFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	b := setupHealth(t, service.ReadinessConfig{Timeout: 500 * time.Millisecond, CacheFor: 100 * time.Millisecond})
	for _, svc := range []string{"", "cacheservice.v1.CacheService"} {
		if got := b.status(t, svc); got != grpchealth.StatusServing {
			t.Fatalf("health of %q = %v with the database up, want SERVING", svc, got)
		}
	}
	if code := b.readyzCode(t); code != http.StatusOK {
		t.Fatalf("/readyz = %d with the database up, want 200", code)
	}
	if _, err := b.health.Check(t.Context(), &grpchealth.CheckRequest{Service: "no.such.Service"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown service: err = %v, want not_found", err)
	}

	if err := b.pg.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	took := b.waitStatus(t, grpchealth.StatusNotServing, 10*time.Second)
	t.Logf("NOT_SERVING %v after the database stopped", took)
	if code := b.readyzCode(t); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with the database down, want 503", code)
	}

	if err := b.pg.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	took = b.waitStatus(t, grpchealth.StatusServing, 15*time.Second)
	t.Logf("SERVING %v after the database restarted", took)
	if code := b.readyzCode(t); code != http.StatusOK {
		t.Fatalf("/readyz = %d after the database returned, want 200", code)
	}
}

// TestHealthChecksShareOnePing fires many checks at once: within CacheFor
// they cost one ping (one pool acquisition) in all.
func TestHealthChecksShareOnePing(t *testing.T) {
	t.Parallel()
	b := setupHealthOn(t, service.ReadinessConfig{CacheFor: time.Minute}, pgtest.NewDatabase(t))
	before := b.store.Pool().Stat().AcquireCount()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			<-start
			res, err := b.health.Check(t.Context(), &grpchealth.CheckRequest{})
			if err != nil || res.Status != grpchealth.StatusServing {
				t.Errorf("health = %v, %v; want SERVING", res, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if pings := b.store.Pool().Stat().AcquireCount() - before; pings != 1 {
		t.Fatalf("50 concurrent checks pinged %d times, want 1", pings)
	}
}
