package service

import (
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cacheservice/cacheservice/auth"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	"github.com/cacheservice/cacheservice/manager"
)

// DefaultMaxRequestBytes is the largest request body the edge reads when
// Options leaves it unset: an inline output of 1 MiB (the manager's default
// limit) in base64 JSON, with room to spare.
const DefaultMaxRequestBytes = 4 << 20

// Options configures the HTTP edge. The zero value is a working server
// without CORS, metrics or tracing.
type Options struct {
	// Logger receives the failed-request log and the readiness changes;
	// nil discards them.
	Logger *slog.Logger
	// Interceptors run around every RPC of every mounted service, outermost
	// first, outside the failed-request log, authentication and validation:
	// so metrics and tracing see the requests those refuse.
	Interceptors []connect.Interceptor
	// Auth, when set, authenticates and authorizes every call of the API
	// services (not health, reflection or /readyz) before validation and
	// the handler, and lets browsers send the Authorization header.
	Auth *auth.Authenticator
	// MaxRequestBytes bounds a request body; 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int
	// CORSAllowedOrigins lists the browser origins allowed to call, "*" for
	// any; empty leaves browsers their same-origin policy.
	CORSAllowedOrigins []string
	// Readiness tunes the database check behind health and /readyz.
	Readiness ReadinessConfig
	// WriteTimeout bounds how long each piece of a response (64 KiB, or a
	// flush) waits for the client to take it; past it the HTTP/2 stream is
	// reset or the HTTP/1.1 connection closed. 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ResponseBudget bounds the bytes of responses held while being
	// written; a response that does not fit is answered resource_exhausted.
	// 0 means DefaultResponseBudget.
	ResponseBudget int64
	// OnCut is called for every response cut short, with the reason; nil
	// ignores them.
	OnCut func(Cut)
	// Handlers substitutes the implementations of the API services behind
	// the same edge; a nil field is served over the manager. Production
	// leaves it zero; cachebench's transport floor sets canned ones, to
	// measure what the edge costs without the service.
	Handlers Handlers
}

// Handlers are implementations of the API services, in place of the ones
// over the manager (see Options.Handlers).
type Handlers struct {
	Cache cachev1connect.CacheServiceHandler
	Flyte flytecachev2connect.CacheServiceHandler
}

// mount is one API service the edge serves over the manager.
type mount struct {
	// desc describes the service: its full name and its methods, from
	// which the procedures, reflection and health names are derived.
	desc protoreflect.ServiceDescriptor
	// handler builds the service's Connect handler with opts, over m
	// unless h substitutes it.
	handler func(m *manager.Manager, h Handlers, opts ...connect.HandlerOption) (string, http.Handler)
}

// mounts lists every API service the edge serves. Adding a service (Flyte's
// CacheService v2, say) is one entry here: the mux, reflection, health and
// Procedures follow, and with them the hostile and fuzz suites.
var mounts = []mount{
	{desc: cachev1.File_cacheservice_v1_cache_proto.Services().ByName("CacheService"), handler: newCacheHandler},
	{desc: flytecachev2.File_flyteidl2_cacheservice_v2_cacheservice_proto.Services().ByName("CacheService"), handler: newFlyteHandler},
}

// Procedures returns the full name of every RPC the edge serves, such as
// /cacheservice.v1.CacheService/Get, in the order of the proto files.
func Procedures() []string {
	var out []string
	for path := range mountedMethods() {
		out = append(out, path)
	}
	return out
}

// mountedMethods yields every method of the mounted services with its URL
// path, in the order of the proto files.
func mountedMethods() iter.Seq2[string, protoreflect.MethodDescriptor] {
	return func(yield func(string, protoreflect.MethodDescriptor) bool) {
		for _, s := range mounts {
			methods := s.desc.Methods()
			for i := range methods.Len() {
				md := methods.Get(i)
				if !yield("/"+string(s.desc.FullName())+"/"+string(md.Name()), md) {
					return
				}
			}
		}
	}
}

// edgeProcedures describes, by path, every procedure whose responses the
// edge writes with knowledge of them: each mounted method (unary unless it
// streams either way; budgeted if it declares NO_SIDE_EFFECTS, as the
// generated handlers' idempotency does), and gRPC health's Check and List,
// unary but outside the budget's interceptor. Health's Watch and
// reflection stream, so they are absent: their flushes must stay.
func edgeProcedures() map[string]procedure {
	out := map[string]procedure{
		"/" + grpchealth.HealthV1ServiceName + "/Check": {unary: true},
		healthListProcedure:                             {unary: true},
	}
	for path, md := range mountedMethods() {
		opts, _ := md.Options().(*descriptorpb.MethodOptions)
		out[path] = procedure{
			unary:    !md.IsStreamingClient() && !md.IsStreamingServer(),
			budgeted: opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		}
	}
	return out
}

// serviceNames returns the full names of the mounted services.
func serviceNames() []string {
	out := make([]string, 0, len(mounts))
	for _, s := range mounts {
		out = append(out, string(s.desc.FullName()))
	}
	return out
}

// NewEdge returns the whole HTTP handler of the server: every mounted API
// service, gRPC health (readiness) and reflection (v1 and v1alpha), /readyz
// and /livez, behind CORS. grpc.health.v1.Health/List is served here
// beside grpchealth's Check (see Readiness.List); Watch is not. The caller adds only the http.Server, listeners and
// whatever operator endpoints it serves beside (metrics, pprof).
//
// Interceptors run in this order, outermost first: opts.Interceptors
// (tracing, metrics), the failed-request log, the response budget, the
// mapping of a gone client's bare context error to canceled,
// authentication (opts.Auth), then protovalidate just before the handler:
// a caller without credentials is counted and logged but learns nothing,
// not even which field is bad. Every response write has a deadline
// (opts.WriteTimeout), so a client that stops reading cannot pin its
// response.
func NewEdge(m *manager.Manager, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	limits := newResponseLimits(opts.WriteTimeout, opts.ResponseBudget, opts.OnCut, edgeProcedures())
	// The budget and clientGone are inside the log and the metrics, which
	// see their refusals and codes.
	interceptors := append(append([]connect.Interceptor(nil), opts.Interceptors...),
		logFailures(opts.Logger), limits.interceptor(), clientGone())
	protect := func(h http.Handler) http.Handler { return h }
	if opts.Auth != nil {
		interceptors = append(interceptors, opts.Auth.Interceptor())
		// The interceptor reads the client certificate from the context.
		protect = auth.Middleware
	}
	handlerOpts := []connect.HandlerOption{
		connect.WithReadMaxBytes(opts.MaxRequestBytes),
		connect.WithInterceptors(interceptors...),
	}

	mux := http.NewServeMux()
	services := make(map[protoreflect.FullName]http.Handler, len(mounts))
	for _, s := range mounts {
		path, h := s.handler(m, opts.Handlers, handlerOpts...)
		h = protect(h)
		services[s.desc.FullName()] = h
		mux.Handle(path, h)
	}
	api := make(map[string]http.Handler)
	for path, md := range mountedMethods() {
		api[path] = services[md.Parent().FullName()]
	}
	readiness := NewReadiness(m, opts.Readiness, opts.Logger)
	mux.Handle(grpchealth.NewHandler(readiness))
	mux.Handle("/readyz", readiness)
	mux.HandleFunc("/livez", livez)
	// More specific than the health service's prefix, so it wins there.
	mux.Handle(healthListProcedure, connect.NewUnaryHandler(healthListProcedure, readiness.List))
	reflector := grpcreflect.NewStaticReflector(append(serviceNames(), grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return withCORS(limits.handler(byPath(api, mux)), opts.CORSAllowedOrigins, opts.Auth != nil)
}

// RouteProcedures serves mux, but sends a request for one of the API's
// procedures (Procedures) straight to edge when mux would route it to
// pattern, the pattern edge is mounted at: the same choice, without mux's
// pattern matching on every call. A procedure that mux routes elsewhere
// (a more specific pattern mounted later) keeps going through mux; so
// mount everything on mux before calling this. The probe is a POST: a
// pattern that names another method is not seen.
func RouteProcedures(mux *http.ServeMux, pattern string, edge http.Handler) http.Handler {
	api := make(map[string]http.Handler)
	for path := range mountedMethods() {
		probe := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "localhost"}
		if _, p := mux.Handler(probe); p == pattern {
			api[path] = edge
		}
	}
	return byPath(api, mux)
}

// byPath serves a request whose path is a key of exact with that handler,
// and every other with fallback. A ServeMux matches patterns on every
// request (cleaning the path, walking its tree); the API's procedures are
// fixed, clean paths, so a map finds their handler for less (two ServeMux
// look-ups were 3 % of the server's CPU per gRPC Get). Paths that are not
// exactly a key, unclean ones included, still go through fallback, and so
// do escaped ones (RawPath set, such as %2F for a slash), which ServeMux
// matches in their escaped form.
func byPath(exact map[string]http.Handler, fallback http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := exact[r.URL.Path]; ok && r.URL.RawPath == "" {
			h.ServeHTTP(w, r)
			return
		}
		fallback.ServeHTTP(w, r)
	})
}

// withCORS lets the configured browser origins call every protocol Connect
// serves, and read the headers its errors come back in. Without origins,
// h is returned as it is and browsers keep their same-origin policy. With
// authentication on, browsers may also send their bearer token.
func withCORS(h http.Handler, origins []string, authorization bool) http.Handler {
	if len(origins) == 0 {
		return h
	}
	headers := connectcors.AllowedHeaders()
	if authorization {
		headers = append(headers, "Authorization")
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: headers,
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200, // seconds; browsers cap it lower anyway
	}).Handler(h)
}
