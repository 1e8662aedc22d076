package reliability

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/embeddedpg"
)

// passwordCanary is the password in the server's database URL: trust
// authentication ignores it, and no log line or response may show it.
const passwordCanary = "pw-canary-7f3e"

// startOwnPostgres starts a PostgreSQL cluster this test alone controls, so
// it can stop and freeze it.
func startOwnPostgres(t *testing.T) *embeddedpg.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pg, err := embeddedpg.Start(ctx, embeddedpg.Config{
		Dir:    postgresDir(t),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		signalPostgres(t, pg.Pid(), syscall.SIGCONT) // in case a freeze was left
		if err := pg.Stop(ctx); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	return pg
}

// signalPostgres signals the postmaster and every process it forked. Each
// backend runs in a session of its own (PostgreSQL calls setsid), so
// signalling the postmaster's process group would miss them.
func signalPostgres(t *testing.T, postmaster int, sig syscall.Signal) {
	t.Helper()
	// The postmaster first, so it forks no backend we would miss; then its
	// children, listed again until a pass finds none new (one forked just
	// before the postmaster stopped shows up late).
	signaled := map[int]bool{}
	pending := []int{postmaster}
	for pass := 0; len(pending) > 0 && pass < 20; pass++ {
		for _, pid := range pending {
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("signal postgres process %d: %v", pid, err)
			}
			signaled[pid] = true
		}
		pending = nil
		for _, pid := range childrenOf(postmaster) {
			if !signaled[pid] {
				pending = append(pending, pid)
			}
		}
	}
}

// TestDatabaseOutagesAreUnavailableAndServerRecovers stops PostgreSQL, and
// freezes it (SIGSTOP: connections hang instead of failing), under a
// running server, again and again. During each outage every RPC over
// Connect and gRPC, with more callers than the pool has connections, is
// unavailable within the server's database deadline, says nothing about SQL
// or the connection, and the process stays up. After each, the server
// serves again without a restart and has lost nothing.
func TestDatabaseOutagesAreUnavailableAndServerRecovers(t *testing.T) {
	t.Parallel()
	const dbTimeout = 2 * time.Second
	pg := startOwnPostgres(t)
	url := pg.ConnString(embeddedpg.DefaultDatabase) + " password=" + passwordCanary
	srv := startServer(t, "server", "--database-url", url, "--db-timeout", dbTimeout.String(), "--db-max-conns", "4")

	outages := pick(4, 12)
	var stored []string
	for i := range outages {
		key := fmt.Sprintf("before-outage-%d", i)
		if _, err := srv.connectClient().Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf(key)})); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		stored = append(stored, key)

		kind := []string{"stopped", "frozen"}[i%2]
		switch kind {
		case "stopped":
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			if err := pg.Stop(ctx); err != nil {
				t.Fatalf("stop postgres: %v", err)
			}
			cancel()
		case "frozen":
			signalPostgres(t, pg.Pid(), syscall.SIGSTOP)
		}
		assertAllUnavailable(t, srv, dbTimeout)
		if !srv.alive() {
			t.Fatalf("server exited during a %s database: %v\n%s", kind, srv.exitErr, srv.output())
		}
		switch kind {
		case "stopped":
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			if err := pg.Restart(ctx); err != nil {
				t.Fatalf("restart postgres: %v", err)
			}
			cancel()
		case "frozen":
			signalPostgres(t, pg.Pid(), syscall.SIGCONT)
		}
		waitServing(t, srv, 30*time.Second)
		for _, k := range stored {
			got, err := srv.grpcClient().Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: k}))
			if err != nil || got.Msg.GetOutput().GetUri() != k {
				t.Fatalf("after outage %d (%s), get %s: %v, %v", i, kind, k, got, err)
			}
		}
		assertAllServe(t, srv, fmt.Sprintf("after-outage-%d", i))
	}
	if out := srv.output(); strings.Contains(out, passwordCanary) {
		t.Fatalf("the server logged the database password")
	}
	t.Logf("survived %d database outages (%d stopped, %d frozen)", outages, (outages+1)/2, outages/2)
}

// rpcCall is one RPC with a valid request, for probing every procedure.
type rpcCall struct {
	name string
	call func(ctx context.Context, c cachev1connect.CacheServiceClient) error
}

func everyRPC(key string) []rpcCall {
	return []rpcCall{
		{"Put", func(ctx context.Context, c cachev1connect.CacheServiceClient) error {
			_, err := c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOf(key), Overwrite: true}))
			return err
		}},
		{"Get", func(ctx context.Context, c cachev1connect.CacheServiceClient) error {
			_, err := c.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: key}))
			return err
		}},
		{"GetOrExtendReservation", func(ctx context.Context, c cachev1connect.CacheServiceClient) error {
			_, err := c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: key, OwnerId: "w"}))
			return err
		}},
		{"ReleaseReservation", func(ctx context.Context, c cachev1connect.CacheServiceClient) error {
			_, err := c.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: scope(), Key: key, OwnerId: "w"}))
			return err
		}},
		{"Delete", func(ctx context.Context, c cachev1connect.CacheServiceClient) error {
			_, err := c.Delete(ctx, connect.NewRequest(&cachev1.DeleteRequest{Scope: scope(), Key: key}))
			return err
		}},
	}
}

// assertAllUnavailable calls every RPC over both protocols, three times
// over at once (more callers than the pool's connections), and wants each
// to be unavailable within dbTimeout plus slack, with a clean message.
func assertAllUnavailable(t *testing.T, srv *serverProc, dbTimeout time.Duration) {
	t.Helper()
	limit := dbTimeout + 3*time.Second
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for copyN := range 3 {
		for proto, c := range map[string]cachev1connect.CacheServiceClient{"connect": srv.connectClient(), "grpc": srv.grpcClient()} {
			for _, rpc := range everyRPC(fmt.Sprintf("outage-%d", copyN)) {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					start := time.Now()
					err := rpc.call(ctx, c)
					took := time.Since(start)
					var ce *connect.Error
					switch {
					case connect.CodeOf(err) != connect.CodeUnavailable:
						errs <- fmt.Errorf("%s over %s: %v, want unavailable", rpc.name, proto, err)
					case took > limit:
						errs <- fmt.Errorf("%s over %s: took %v, over the %v deadline plus slack", rpc.name, proto, took, dbTimeout)
					case !asConnectError(err, &ce):
						errs <- fmt.Errorf("%s over %s: %T is not a connect error", rpc.name, proto, err)
					default:
						for _, m := range append(leakMarkers, passwordCanary) {
							if strings.Contains(ce.Message(), m) {
								errs <- fmt.Errorf("%s over %s: message leaks %q: %q", rpc.name, proto, m, ce.Message())
							}
						}
					}
				})
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// waitServing polls Get (bounded) until the server answers without
// unavailable.
func waitServing(t *testing.T, srv *serverProc, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := srv.connectClient().Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "probe"}))
		cancel()
		if connect.CodeOf(err) == connect.CodeNotFound {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not serve again within %v: last %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertAllServe calls every RPC over both protocols and wants success
// (Put first and Delete last, so the entry exists in between).
func assertAllServe(t *testing.T, srv *serverProc, key string) {
	t.Helper()
	for proto, c := range map[string]cachev1connect.CacheServiceClient{"connect": srv.connectClient(), "grpc": srv.grpcClient()} {
		for _, rpc := range everyRPC(key + "-" + proto) {
			if err := rpc.call(t.Context(), c); err != nil {
				t.Fatalf("%s over %s after the outage: %v", rpc.name, proto, err)
			}
		}
	}
}
