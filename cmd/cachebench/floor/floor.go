// Package floor is cachebench's transport floor: implementations of the
// API services that answer canned responses without the manager or the
// database. Built into cacheservice with the cachebench_floor tag (see
// cmd/cacheservice/floor.go), it runs the real edge and the real HTTP
// server over them, so the server's CPU per call against this floor is what
// the transport, the interceptors and validation cost, and the real
// server's above it is the service's own. The production binary never
// imports it: the tag is off there.
package floor

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/service"
)

// PayloadBytes is the size of the inline output every Get answers with:
// cachebench's default --payload, so that a hit weighs what a real one does.
const PayloadBytes = 256

// heartbeat is what a claim is granted when it asks for none.
const heartbeat = 10 * time.Second

// Handlers returns the canned implementations of both API services.
func Handlers() service.Handlers {
	now := timestamppb.Now()
	output := &cachev1.CachedOutput{
		Value:    &cachev1.CachedOutput_Inline{Inline: make([]byte, PayloadBytes)},
		Metadata: &cachev1.Metadata{CreatedAt: now, LastUpdatedAt: now},
	}
	flyteOutput := &flytecache.CachedOutput{
		Output:   &flytecache.CachedOutput_OutputUri{OutputUri: "s3://floor/outputs.pb"},
		Metadata: &flytecache.Metadata{CreatedAt: now, LastUpdatedAt: now},
	}
	return service.Handlers{
		Cache: &cacheService{get: &cachev1.GetResponse{Output: output}},
		Flyte: &flyteService{get: &flytecache.GetCacheResponse{Output: flyteOutput}},
	}
}

// cacheService answers every call of our API at once: every Get hits the
// same output, every Put stores, every claim is granted to its caller.
// (So claim-contended sees one owner per caller against the floor: it is
// not a workload to run here.)
type cacheService struct {
	get *cachev1.GetResponse // shared: encoding only reads it
}

var _ cachev1connect.CacheServiceHandler = (*cacheService)(nil)

func (s *cacheService) Get(context.Context, *connect.Request[cachev1.GetRequest]) (*connect.Response[cachev1.GetResponse], error) {
	return connect.NewResponse(s.get), nil
}

func (s *cacheService) Put(context.Context, *connect.Request[cachev1.PutRequest]) (*connect.Response[cachev1.PutResponse], error) {
	return connect.NewResponse(&cachev1.PutResponse{}), nil
}

func (s *cacheService) Delete(context.Context, *connect.Request[cachev1.DeleteRequest]) (*connect.Response[cachev1.DeleteResponse], error) {
	return connect.NewResponse(&cachev1.DeleteResponse{}), nil
}

func (s *cacheService) GetOrExtendReservation(_ context.Context, req *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error) {
	hb := req.Msg.GetHeartbeatInterval()
	if hb == nil {
		hb = durationpb.New(heartbeat)
	}
	return connect.NewResponse(&cachev1.GetOrExtendReservationResponse{Reservation: &cachev1.Reservation{
		Key:               req.Msg.GetKey(),
		OwnerId:           req.Msg.GetOwnerId(),
		HeartbeatInterval: hb,
		ExpiresAt:         timestamppb.New(time.Now().Add(3 * hb.AsDuration())),
	}}), nil
}

func (s *cacheService) ReleaseReservation(context.Context, *connect.Request[cachev1.ReleaseReservationRequest]) (*connect.Response[cachev1.ReleaseReservationResponse], error) {
	return connect.NewResponse(&cachev1.ReleaseReservationResponse{}), nil
}

// flyteService is cacheService for Flyte's API.
type flyteService struct {
	get *flytecache.GetCacheResponse // shared: encoding only reads it
}

var _ flytecachev2connect.CacheServiceHandler = (*flyteService)(nil)

func (s *flyteService) Get(context.Context, *connect.Request[flytecachev2.GetCacheRequest]) (*connect.Response[flytecache.GetCacheResponse], error) {
	return connect.NewResponse(s.get), nil
}

func (s *flyteService) Put(context.Context, *connect.Request[flytecachev2.PutCacheRequest]) (*connect.Response[flytecache.PutCacheResponse], error) {
	return connect.NewResponse(&flytecache.PutCacheResponse{}), nil
}

func (s *flyteService) Delete(context.Context, *connect.Request[flytecachev2.DeleteCacheRequest]) (*connect.Response[flytecache.DeleteCacheResponse], error) {
	return connect.NewResponse(&flytecache.DeleteCacheResponse{}), nil
}

func (s *flyteService) GetOrExtendReservation(_ context.Context, req *connect.Request[flytecachev2.GetOrExtendReservationRequest]) (*connect.Response[flytecache.GetOrExtendReservationResponse], error) {
	base := req.Msg.GetBaseRequest()
	hb := base.GetHeartbeatInterval()
	if hb == nil || hb.AsDuration() == 0 {
		hb = durationpb.New(heartbeat)
	}
	return connect.NewResponse(&flytecache.GetOrExtendReservationResponse{Reservation: &flytecache.Reservation{
		Key:               base.GetKey(),
		OwnerId:           base.GetOwnerId(),
		HeartbeatInterval: hb,
		ExpiresAt:         timestamppb.New(time.Now().Add(3 * hb.AsDuration())),
	}}), nil
}

func (s *flyteService) ReleaseReservation(context.Context, *connect.Request[flytecachev2.ReleaseReservationRequest]) (*connect.Response[flytecache.ReleaseReservationResponse], error) {
	return connect.NewResponse(&flytecache.ReleaseReservationResponse{}), nil
}
