// Package tracing traces RPCs with OpenTelemetry through otelconnect and
// exports the spans over OTLP/HTTP, but only when an endpoint is configured:
// otherwise New returns nil and the server installs no interceptor and no
// provider, so tracing costs nothing. It sets no global tracer provider or
// propagator: the interceptor is given its own.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// The standard environment variables that name an OTLP endpoint, and the one
// that turns the SDK off.
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envSDKDisabled    = "OTEL_SDK_DISABLED"
)

// Config says where spans go.
type Config struct {
	// Endpoint is the base URL of an OTLP/HTTP receiver, such as
	// http://otel-collector:4318; /v1/traces is appended, as for
	// OTEL_EXPORTER_OTLP_ENDPOINT. Empty leaves the choice to the standard
	// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variables, and tracing is off
	// when none is set.
	Endpoint string
	// ServiceVersion is reported as service.version; cmd sets it from the
	// build (internal/version).
	ServiceVersion string
	// Logger receives export errors.
	Logger *slog.Logger
}

// Enabled reports whether cfg or the environment names an endpoint (and
// OTEL_SDK_DISABLED is not true).
func Enabled(cfg Config) bool {
	if strings.EqualFold(os.Getenv(envSDKDisabled), "true") {
		return false
	}
	return cfg.Endpoint != "" || os.Getenv(envEndpoint) != "" || os.Getenv(envTracesEndpoint) != ""
}

// Tracing is a tracer provider exporting over OTLP and the interceptor that
// makes a span of every RPC.
type Tracing struct {
	provider    *sdktrace.TracerProvider
	interceptor *otelconnect.Interceptor
}

// New sets up tracing when Enabled(cfg), and returns nil otherwise. The
// other standard OTEL_ variables (headers, sampler, resource attributes,
// batching) apply as the SDK defines them.
func New(ctx context.Context, cfg Config) (*Tracing, error) {
	if !Enabled(cfg) {
		return nil, nil
	}
	var opts []otlptracehttp.Option
	if cfg.Endpoint != "" {
		endpoint, err := tracesURL(cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
	}
	// The exporter connects lazily: a receiver that is down costs dropped
	// spans and a logged error, never a failed start.
	exporter, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("create otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("cacheservice"), semconv.ServiceVersion(cfg.ServiceVersion)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over ours
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("describe trace resource: %w", err)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	interceptor, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(provider),
		otelconnect.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		// Callers are the workflow engine's own workers: their spans are
		// the parents of ours, so one trace shows a task and its cache calls.
		otelconnect.WithTrustRemote(),
		otelconnect.WithoutMetrics(), // Prometheus has them
	)
	if err != nil {
		_ = provider.Shutdown(ctx)
		return nil, fmt.Errorf("create tracing interceptor: %w", err)
	}
	if cfg.Logger != nil {
		// The SDK reports export failures only through this process-wide
		// handler; without it they go to the standard logger unstructured.
		logger := cfg.Logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			logger.Warn("opentelemetry", "err", err)
		}))
	}
	return &Tracing{provider: provider, interceptor: interceptor}, nil
}

// Interceptor makes a server span of every RPC.
func (t *Tracing) Interceptor() connect.Interceptor { return t.interceptor }

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracing: %w", err)
	}
	return nil
}

// tracesURL turns a base endpoint into the URL traces are posted to.
func tracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("otlp endpoint %q: want an http:// or https:// URL such as http://otel-collector:4318", endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	return u.String(), nil
}
