package service

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cacheservice/cacheservice/manager"
)

// ReadinessConfig tunes the database check behind health.
type ReadinessConfig struct {
	// Timeout bounds one ping; default 1s. A database slower than that to
	// answer a ping is as good as down for a cache.
	Timeout time.Duration
	// CacheFor is how long a result is reused; default 1s. Probes from a
	// load balancer, an orchestrator and a person with grpcurl then cost
	// one ping a second at most.
	CacheFor time.Duration
}

// Readiness is a grpchealth.Checker that reports SERVING, for the whole
// server ("") and for every mounted service, while the database answers a ping, and
// NOT_SERVING while it does not, so that load balancers send requests
// elsewhere during an outage and back when it ends. It also serves the same
// answer over plain HTTP for probes that speak only that.
type Readiness struct {
	manager *manager.Manager
	cfg     ReadinessConfig
	logger  *slog.Logger

	// turn is a one-slot lock held across a ping, so concurrent checks wait
	// for its result instead of pinging too; a channel, so a waiting check
	// can give up when its caller does.
	turn      chan struct{}
	checkedAt time.Time
	status    grpchealth.Status
}

var _ grpchealth.Checker = (*Readiness)(nil)

// NewReadiness returns a checker over m's database.
func NewReadiness(m *manager.Manager, cfg ReadinessConfig, logger *slog.Logger) *Readiness {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.CacheFor <= 0 {
		cfg.CacheFor = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Readiness{manager: m, cfg: cfg, logger: logger, turn: make(chan struct{}, 1), status: grpchealth.StatusUnknown}
}

// Check implements grpchealth.Checker.
func (r *Readiness) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !slices.Contains(serviceNames(), req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %s", req.Service))
	}
	status, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	return &grpchealth.CheckResponse{Status: status}, nil
}

// ServeHTTP answers 200 while serving and 503 otherwise.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	status, err := r.current(req.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil || status != grpchealth.StatusServing {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not serving: database unavailable")
		return
	}
	fmt.Fprintln(w, "serving")
}

// current returns the cached status, or pings for a fresh one.
func (r *Readiness) current(ctx context.Context) (grpchealth.Status, error) {
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return grpchealth.StatusUnknown, connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	defer func() { <-r.turn }()
	if time.Since(r.checkedAt) < r.cfg.CacheFor {
		return r.status, nil
	}
	// The ping runs on its own deadline, not the prober's: its result is
	// shared by everyone who asks within CacheFor.
	pingCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
	defer cancel()
	err := r.manager.Ping(pingCtx)
	status := grpchealth.StatusServing
	if err != nil {
		status = grpchealth.StatusNotServing
	}
	if status != r.status {
		if err != nil {
			r.logger.WarnContext(ctx, "database unreachable; health reports NOT_SERVING", "err", err)
		} else {
			r.logger.InfoContext(ctx, "database reachable; health reports SERVING")
		}
	}
	r.status, r.checkedAt = status, time.Now()
	return status, nil
}

// livez answers 200 while the process can serve HTTP at all. It never
// touches the database: a liveness probe that failed with the database
// would have the orchestrator restart every replica during an outage,
// which cures nothing (readiness, /readyz, takes the pod out of rotation
// instead).
func livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "alive")
}

// healthListProcedure is grpc.health.v1.Health/List, which grpchealth
// v1.5.0 does not serve. Reflection advertises it whenever grpc-go's health
// descriptor is linked into the binary (the OTLP exporter's dependencies
// link it into cacheservice), so the edge answers it rather than leave an
// advertised method unimplemented.
const healthListProcedure = "/" + grpchealth.HealthV1ServiceName + "/List"

// List answers grpc.health.v1.Health/List: the status of the whole server
// ("") and of every mounted service, all from the one shared ping.
func (r *Readiness) List(ctx context.Context, _ *connect.Request[healthpb.HealthListRequest]) (*connect.Response[healthpb.HealthListResponse], error) {
	status, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	wire := healthpb.HealthCheckResponse_NOT_SERVING
	if status == grpchealth.StatusServing {
		wire = healthpb.HealthCheckResponse_SERVING
	}
	res := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{"": {Status: wire}}}
	for _, name := range serviceNames() {
		res.Statuses[name] = &healthpb.HealthCheckResponse{Status: wire}
	}
	return connect.NewResponse(res), nil
}
