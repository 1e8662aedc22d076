// Package service is the HTTP edge of the cache: NewEdge returns the one
// handler the server serves (every API service, health, reflection,
// /readyz, CORS, the request limit and the failure log), and each API
// service turns RPCs into manager calls and back. It is deliberately thin:
// no SQL, no policy. Requests are validated against the proto's
// protovalidate rules before a handler runs. It knows nothing of the
// http.Server, listeners or flags, which are cmd's.
package service

import (
	"context"
	"net/http"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/validate"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
)

// compressMinBytes is the smallest response the handler compresses. Most
// responses are a few hundred bytes, where gzip saves nothing on the wire but
// costs more CPU than the rest of the request (resetting a compressor alone
// was a tenth of the server's profile under load).
const compressMinBytes = 4 << 10

// NewHandler returns the path and handler of CacheService over m, as
// NewEdge mounts it. The
// interceptors given in opts run first, outermost first, and the
// protovalidate interceptor last, just before the handler: so metrics,
// tracing and logging interceptors see requests that validation rejects.
// opts may override the handler's defaults.
func NewHandler(m *manager.Manager, opts ...connect.HandlerOption) (string, http.Handler) {
	return newCacheHandler(m, Handlers{}, opts...)
}

// newCacheHandler is NewHandler, with h.Cache in place of the service over
// m when set.
func newCacheHandler(m *manager.Manager, h Handlers, opts ...connect.HandlerOption) (string, http.Handler) {
	impl := h.Cache
	if impl == nil {
		impl = &cacheService{manager: m}
	}
	opts = slices.Concat(
		[]connect.HandlerOption{connect.WithCompressMinBytes(compressMinBytes)},
		opts,
		[]connect.HandlerOption{connect.WithInterceptors(validate.NewInterceptor())},
	)
	path, handler := cachev1connect.NewCacheServiceHandler(impl, opts...)
	return path, withStack(handler)
}

// cacheService implements the generated handler interface.
type cacheService struct {
	manager *manager.Manager
}

var _ cachev1connect.CacheServiceHandler = (*cacheService)(nil)

func (s *cacheService) Get(ctx context.Context, req *connect.Request[cachev1.GetRequest]) (*connect.Response[cachev1.GetResponse], error) {
	return respond(s.manager.Get(ctx, req.Msg))
}

func (s *cacheService) Put(ctx context.Context, req *connect.Request[cachev1.PutRequest]) (*connect.Response[cachev1.PutResponse], error) {
	return respond(s.manager.Put(ctx, req.Msg))
}

func (s *cacheService) Delete(ctx context.Context, req *connect.Request[cachev1.DeleteRequest]) (*connect.Response[cachev1.DeleteResponse], error) {
	return respond(s.manager.Delete(ctx, req.Msg))
}

func (s *cacheService) GetOrExtendReservation(ctx context.Context, req *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error) {
	return respond(s.manager.GetOrExtendReservation(ctx, req.Msg))
}

func (s *cacheService) ReleaseReservation(ctx context.Context, req *connect.Request[cachev1.ReleaseReservationRequest]) (*connect.Response[cachev1.ReleaseReservationResponse], error) {
	return respond(s.manager.ReleaseReservation(ctx, req.Msg))
}

// respond wraps a manager result in a Connect response.
func respond[T any](msg *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(msg), nil
}
