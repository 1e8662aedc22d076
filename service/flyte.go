package service

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/validate"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	"github.com/cacheservice/cacheservice/manager"
)

// NewFlyteHandler returns the path and handler of Flyte's cache API
// (flyteidl2.cacheservice.v2.CacheService) over m, the same manager as ours,
// so both APIs share one policy and one table; the edge mounts it beside
// ours. Options are ordered as in NewHandler: the caller's interceptors
// first, validation last.
func NewFlyteHandler(m *manager.Manager, opts ...connect.HandlerOption) (string, http.Handler) {
	return newFlyteHandler(m, Handlers{}, opts...)
}

// newFlyteHandler is NewFlyteHandler, with h.Flyte in place of the service
// over m when set.
func newFlyteHandler(m *manager.Manager, h Handlers, opts ...connect.HandlerOption) (string, http.Handler) {
	impl := h.Flyte
	if impl == nil {
		impl = &flyteService{manager: m}
	}
	opts = slices.Concat(
		[]connect.HandlerOption{connect.WithCompressMinBytes(compressMinBytes)},
		opts,
		[]connect.HandlerOption{connect.WithInterceptors(validate.NewInterceptor())},
	)
	path, handler := flytecachev2connect.NewCacheServiceHandler(impl, opts...)
	return path, withStack(handler)
}

// flyteService implements Flyte's generated handler interface.
type flyteService struct {
	manager *manager.Manager
}

var _ flytecachev2connect.CacheServiceHandler = (*flyteService)(nil)

func (s *flyteService) Get(ctx context.Context, req *connect.Request[flytecachev2.GetCacheRequest]) (*connect.Response[flytecache.GetCacheResponse], error) {
	return respond(s.manager.FlyteGet(ctx, req.Msg))
}

func (s *flyteService) Put(ctx context.Context, req *connect.Request[flytecachev2.PutCacheRequest]) (*connect.Response[flytecache.PutCacheResponse], error) {
	// The LiteralMap is declared without fields: over JSON its content is
	// dropped on decoding, and storing what is left would store half.
	if req.Msg.GetBaseRequest().GetOutput().GetOutputLiterals() != nil && isJSON(req.Header()) {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("base_request.output.output_literals: send literals over binary protobuf; JSON cannot carry them"))
	}
	return respond(s.manager.FlytePut(ctx, req.Msg))
}

func (s *flyteService) Delete(ctx context.Context, req *connect.Request[flytecachev2.DeleteCacheRequest]) (*connect.Response[flytecache.DeleteCacheResponse], error) {
	return respond(s.manager.FlyteDelete(ctx, req.Msg))
}

func (s *flyteService) GetOrExtendReservation(ctx context.Context, req *connect.Request[flytecachev2.GetOrExtendReservationRequest]) (*connect.Response[flytecache.GetOrExtendReservationResponse], error) {
	return respond(s.manager.FlyteGetOrExtendReservation(ctx, req.Msg))
}

func (s *flyteService) ReleaseReservation(ctx context.Context, req *connect.Request[flytecachev2.ReleaseReservationRequest]) (*connect.Response[flytecache.ReleaseReservationResponse], error) {
	return respond(s.manager.FlyteReleaseReservation(ctx, req.Msg))
}

// isJSON reports whether the request body was JSON, in any of the protocols
// (application/json, application/grpc+json, application/grpc-web+json).
func isJSON(h http.Header) bool {
	return strings.Contains(strings.ToLower(h.Get("Content-Type")), "json")
}
