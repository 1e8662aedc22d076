package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// Bounds on every wait in these tests.
const (
	startTimeout = time.Minute // the embedded mode runs initdb
	callTimeout  = 15 * time.Second
	stopTimeout  = 30 * time.Second
)

// testServer is a server started in-process by run, on a loopback port.
type testServer struct {
	url  string      // http://127.0.0.1:port
	logs *syncBuffer // everything the server logged
	stop func()      // shuts it down and waits; run's error fails the test
}

// startServer runs the server like `cacheservice serve` with args (after
// flags for a fresh test database and a free port) and stops it at cleanup.
func startServer(t *testing.T, args ...string) *testServer {
	t.Helper()
	args = append([]string{"--database-url", pgtest.NewDatabase(t)}, args...)
	return startServerWith(t, args...)
}

// startServerWith is startServer without the test database, for the
// embedded mode.
func startServerWith(t *testing.T, args ...string) *testServer {
	t.Helper()
	args = append([]string{"--addr", "127.0.0.1:0", "--log-level", "debug"}, args...)
	cfg, err := parseConfig(args, noEnv, os.Stderr)
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", args, err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, newLogger(logs, cfg), ln, nil) }()

	var once sync.Once
	scheme := "http://"
	if cfg.tlsOn() {
		scheme = "https://"
	}
	srv := &testServer{url: scheme + ln.Addr().String(), logs: logs}
	srv.stop = func() {
		t.Helper()
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(stopTimeout):
				t.Errorf("run did not return within %v of cancellation", stopTimeout)
			}
		})
	}
	t.Cleanup(func() {
		srv.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	srv.waitServing(t, done)
	return srv
}

// waitServing polls the health check until the server answers SERVING,
// failing at once if run returns first.
func (s *testServer) waitServing(t *testing.T, done <-chan error) {
	t.Helper()
	hc := http1Client(t)
	// Only readiness is polled here: the tests of TLS check the certificate.
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	client := grpchealth.NewClient(hc, s.url)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := client.Check(ctx, &grpchealth.CheckRequest{})
		cancel()
		if err == nil && res.Status == grpchealth.StatusServing {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before serving: %v\nlog:\n%s", err, s.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not serving after %v (last error: %v)\nlog:\n%s", startTimeout, err, s.logs)
		}
	}
}

// noEnv is an empty environment, so the ambient one (DATABASE_URL...)
// cannot change what a test runs.
func noEnv(string) (string, bool) { return "", false }

// http1Client speaks HTTP/1.1 only.
func http1Client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: callTimeout}
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge), as gRPC does.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: callTimeout}
}

// protocol is a way to call the service.
type protocol struct {
	name   string
	client cachev1connect.CacheServiceClient
}

// protocols returns a client per protocol every RPC is tested with: Connect
// with JSON over HTTP/1.1, and gRPC over unencrypted HTTP/2.
func (s *testServer) protocols(t *testing.T) []protocol {
	t.Helper()
	return []protocol{
		{"connect+json/http1.1", cachev1connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithProtoJSON())},
		{"grpc/h2c", cachev1connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithGRPC())},
	}
}

// callCtx bounds one call.
func callCtx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// scope returns a scope unique to the test, so tests may share a server.
func scope(t *testing.T) *cachev1.Scope {
	t.Helper()
	return &cachev1.Scope{Org: "org", Project: strings.ReplaceAll(t.Name(), "/", "."), Domain: "development"}
}

// wantCode fails unless err is a Connect error with code whose message is
// safe to show a client.
func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if got := connect.CodeOf(err); err == nil || got != code {
		t.Fatalf("error = %v (code %v), want code %v", err, got, code)
	}
	wantSafeMessage(t, err.Error())
}

// wantSafeMessage fails if msg leaks database internals.
func wantSafeMessage(t *testing.T, msg string) {
	t.Helper()
	for _, leak := range []string{"SQL", "pgx", "postgres", "host=", "password", "dbname"} {
		if strings.Contains(strings.ToLower(msg), strings.ToLower(leak)) {
			t.Errorf("error message %q contains %q", msg, leak)
		}
	}
}

// putAndGet stores an output under a fresh key and reads it back, proving
// the server still serves.
func putAndGet(t *testing.T, client cachev1connect.CacheServiceClient) {
	t.Helper()
	sc := scope(t)
	key := fmt.Sprintf("alive-%d", time.Now().UnixNano())
	if _, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
		Scope: sc, Key: key, Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/" + key}},
	})); err != nil {
		t.Fatalf("Put after the bad request: %v", err)
	}
	res, err := client.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: key}))
	if err != nil {
		t.Fatalf("Get after the bad request: %v", err)
	}
	if got := res.Msg.GetOutput().GetUri(); got != "s3://bucket/"+key {
		t.Fatalf("Get after the bad request: uri = %q", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
