package tracing_test

import (
	"context"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/otlptest"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
	"github.com/cacheservice/cacheservice/tracing"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, store.Migrate))
}

// clearEnv unsets the OTEL_ variables for the test, so the machine's own
// settings cannot turn tracing on or off.
func clearEnv(t *testing.T) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

// callTraced serves CacheService behind tr's interceptor and makes one Get
// as part of the remote trace traceparent, then flushes the spans.
func callTraced(t *testing.T, tr *tracing.Tracing, traceparent string) {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{URL: pgtest.NewDatabase(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	srv := httptest.NewServer(service.NewEdge(manager.New(st, manager.Config{}, nil),
		service.Options{Interceptors: []connect.Interceptor{tr.Interceptor()}}))
	t.Cleanup(srv.Close)
	client := cachev1connect.NewCacheServiceClient(srv.Client(), srv.URL)
	req := connect.NewRequest(&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}, Key: "k"})
	req.Header().Set("traceparent", traceparent)
	if _, err := client.Get(t.Context(), req); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get: %v, want not_found", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil { // flushes the batch
		t.Fatal(err)
	}
}

func TestSpanReachesReceiverGivenByFlag(t *testing.T) {
	clearEnv(t)
	recv := otlptest.NewReceiver(t)
	tr, err := tracing.New(t.Context(), tracing.Config{Endpoint: recv.URL, ServiceVersion: "v1.2.3-test"})
	if err != nil || tr == nil {
		t.Fatalf("New = %v, %v; want tracing on", tr, err)
	}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	callTraced(t, tr, "00-"+traceID+"-"+parentID+"-01")

	span, paths := recv.Span("cacheservice.v1.CacheService/Get"), recv.Paths()
	if span == nil {
		t.Fatalf("no Get span received (requests to %v)", paths)
	}
	if got := hex.EncodeToString(span.GetTraceId()); got != traceID {
		t.Errorf("trace id = %s, want the caller's %s", got, traceID)
	}
	if got := hex.EncodeToString(span.GetParentSpanId()); got != parentID {
		t.Errorf("parent span id = %s, want the caller's %s", got, parentID)
	}
	if span.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("kind = %v, want server", span.GetKind())
	}
	if got := recv.ResourceAttribute("cacheservice.v1.CacheService/Get", "service.version"); got != "v1.2.3-test" {
		t.Errorf("service.version = %q, want the configured v1.2.3-test", got)
	}
	if paths[0] != "/v1/traces" {
		t.Errorf("posted to %s, want /v1/traces", paths[0])
	}
}

func TestEnvironmentEndpointTurnsTracingOn(t *testing.T) {
	clearEnv(t)
	recv := otlptest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	tr, err := tracing.New(t.Context(), tracing.Config{})
	if err != nil || tr == nil {
		t.Fatalf("New = %v, %v; want tracing on", tr, err)
	}
	callTraced(t, tr, "")
	if recv.Span("cacheservice.v1.CacheService/Get") == nil {
		t.Fatalf("no Get span received (requests to %v)", recv.Paths())
	}
}

func TestTracingIsOffWithoutEndpoint(t *testing.T) {
	cases := map[string]struct {
		cfg tracing.Config
		env map[string]string
	}{
		"nothing set":               {},
		"OTEL_SDK_DISABLED=true":    {cfg: tracing.Config{Endpoint: "http://127.0.0.1:4318"}, env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		"only other OTEL_ settings": {env: map[string]string{"OTEL_SERVICE_NAME": "x"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			if tracing.Enabled(c.cfg) {
				t.Error("Enabled = true, want false")
			}
			tr, err := tracing.New(t.Context(), c.cfg)
			if tr != nil || err != nil {
				t.Errorf("New = %v, %v; want nil, nil", tr, err)
			}
		})
	}
}

func TestBadEndpointIsRejected(t *testing.T) {
	clearEnv(t)
	for _, endpoint := range []string{"collector:4318", "grpc://collector:4317", "http://"} {
		if _, err := tracing.New(t.Context(), tracing.Config{Endpoint: endpoint}); err == nil {
			t.Errorf("endpoint %q accepted, want an error", endpoint)
		}
	}
}
