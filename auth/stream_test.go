package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// TestReflectionStreamsPassThrough mounts reflection behind the interceptor
// (the edge does not, but a uniform mount must not break it): its
// bidirectional stream works without credentials.
func TestReflectionStreamsPassThrough(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, baseFile(), nil)
	mux := http.NewServeMux()
	mux.Handle(grpcreflect.NewHandlerV1(grpcreflect.NewStaticReflector(cachev1connect.CacheServiceName), connect.WithInterceptors(a.Interceptor())))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	stream := grpcreflect.NewClient(srv.Client(), srv.URL).NewStream(t.Context())
	t.Cleanup(func() { _, _ = stream.Close() })
	names, err := stream.ListServices()
	if err != nil || len(names) != 1 || names[0] != cachev1connect.CacheServiceName {
		t.Fatalf("ListServices = %v, %v", names, err)
	}
}

// streamConn is a server stream on a given procedure; only Spec is used.
type streamConn struct {
	connect.StreamingHandlerConn
	spec connect.Spec
}

func (c streamConn) Spec() connect.Spec { return c.spec }

// TestStreamOnAProtectedProcedureIsRefused: should a streaming RPC ever be
// added to the access table, it is refused until the interceptor checks it,
// rather than passed through unchecked.
func TestStreamOnAProtectedProcedureIsRefused(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, baseFile(), nil)
	called := false
	h := a.Interceptor().WrapStreamingHandler(func(context.Context, connect.StreamingHandlerConn) error {
		called = true
		return nil
	})
	err := h(t.Context(), streamConn{spec: connect.Spec{Procedure: cachev1connect.CacheServiceGetProcedure, StreamType: connect.StreamTypeBidi}})
	if connect.CodeOf(err) != connect.CodePermissionDenied || called {
		t.Fatalf("stream on a protected procedure: err %v, handler called %v", err, called)
	}
	err = h(t.Context(), streamConn{spec: connect.Spec{Procedure: "/grpc.health.v1.Health/Watch", StreamType: connect.StreamTypeServer}})
	if err != nil || !called {
		t.Fatalf("health stream: err %v, handler called %v", err, called)
	}
}
