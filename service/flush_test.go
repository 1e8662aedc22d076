package service_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

const healthCheckProcedure = "/" + grpchealth.HealthV1ServiceName + "/Check"

// flushCounter counts, by path, the explicit flushes that reach the
// server's own ResponseWriter from beneath it.
type flushCounter struct {
	mu     sync.Mutex
	byPath map[string]int
}

func (c *flushCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&countingWriter{ResponseWriter: w, c: c, path: r.URL.Path}, r)
	})
}

func (c *flushCounter) of(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byPath[path]
}

type countingWriter struct {
	http.ResponseWriter
	c    *flushCounter
	path string
}

func (w *countingWriter) FlushError() error {
	w.c.mu.Lock()
	w.c.byPath[w.path]++
	w.c.mu.Unlock()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *countingWriter) Flush() { _ = w.FlushError() }

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestUnaryResponsesAreNotFlushedButStreamsAre serves the whole edge over
// HTTP/2 on loopback, behind a writer that counts the flushes reaching the
// server's, and calls unary procedures (a Get hit and a Put over gRPC and
// Connect, a health Check) and reflection's bidirectional stream. Connect
// flushes after every message it sends; for unary calls the edge drops
// those flushes (net/http sends the response when the handler returns),
// while a stream's flushes, which carry each message out as it is sent,
// must all get through.
func TestUnaryResponsesAreNotFlushedButStreamsAre(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	counter := &flushCounter{byPath: map[string]int{}}
	srv := httptest.NewUnstartedServer(counter.wrap(service.NewEdge(manager.New(st, manager.Config{}, nil), service.Options{})))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	scope := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	output := &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: bytes.Repeat([]byte{'x'}, 100<<10)}}
	for _, opts := range [][]connect.ClientOption{{connect.WithGRPC()}, nil} {
		client := cachev1connect.NewCacheServiceClient(srv.Client(), srv.URL, opts...)
		if _, err := client.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope, Key: "k", Output: output, Overwrite: true})); err != nil {
			t.Fatalf("put: %v", err)
		}
		res, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope, Key: "k"}))
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !bytes.Equal(res.Msg.GetOutput().GetInline(), output.GetInline()) {
			t.Fatalf("get answered %d bytes, want the %d put", len(res.Msg.GetOutput().GetInline()), len(output.GetInline()))
		}
	}
	health := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](srv.Client(),
		srv.URL+healthCheckProcedure, connect.WithGRPC())
	if _, err := health.CallUnary(t.Context(), connect.NewRequest(&healthpb.HealthCheckRequest{})); err != nil {
		t.Fatalf("health check: %v", err)
	}

	stream := grpcreflect.NewClient(srv.Client(), srv.URL).NewStream(t.Context())
	for range 3 {
		names, err := stream.ListServices()
		if err != nil {
			t.Fatalf("reflection: %v", err)
		}
		if len(names) == 0 {
			t.Fatal("reflection listed no services")
		}
	}
	if _, err := stream.Close(); err != nil {
		t.Fatalf("close the reflection stream: %v", err)
	}

	for _, path := range []string{cachev1connect.CacheServiceGetProcedure, cachev1connect.CacheServicePutProcedure, healthCheckProcedure} {
		if n := counter.of(path); n != 0 {
			t.Errorf("%s: %d explicit flushes reached the server's writer, want 0 (unary)", path, n)
		}
	}
	if n := counter.of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); n < 3 {
		t.Errorf("reflection's stream: %d flushes reached the server's writer, want one per message sent (3 at least)", n)
	}
}
