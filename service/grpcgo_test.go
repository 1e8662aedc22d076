package service_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/service"
)

const maxRequestBytes = 64 << 10

// start serves the real edge over the floor's canned handlers on a
// loopback port, with Go's HTTP server (viaGRPCGo false) or behind grpc-go,
// and returns a grpc-go client of it.
func start(t *testing.T, viaGRPCGo bool, interceptors ...connect.Interceptor) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: service.NewEdge(nil, service.Options{Handlers: floor.Handlers(), MaxRequestBytes: maxRequestBytes,
		Interceptors: interceptors}),
		Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	served := make(chan error, 1)
	go func() {
		if viaGRPCGo {
			other, grpcConns := service.SplitGRPC(ln)
			gs := service.NewGRPCServer(srv.Handler, service.GRPCOptions{MaxStreams: 100, MaxRequestBytes: maxRequestBytes})
			srv.RegisterOnShutdown(gs.GracefulStop)
			go func() { _ = gs.Serve(grpcConns) }()
			served <- srv.Serve(other)
		} else {
			served <- srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shut down: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve returned %v, want http.ErrServerClosed", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// answer is one call's outcome as a client sees it.
type answer struct {
	msg    []byte // the response, encoded
	code   codes.Code
	status []byte // the status with its details, encoded
}

func call(t *testing.T, conn *grpc.ClientConn, method string, req proto.Message, res proto.Message, opts ...grpc.CallOption) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := conn.Invoke(ctx, method, req, res, opts...)
	st := status.Convert(err)
	stBytes, _ := proto.Marshal(st.Proto())
	var msg []byte
	if err == nil {
		clearTimes(res.ProtoReflect())
		msg, _ = proto.MarshalOptions{Deterministic: true}.Marshal(res)
	}
	return answer{msg: msg, code: st.Code(), status: stBytes}
}

// clearTimes clears every timestamp in m: the floor's answers carry the
// time they were made.
func clearTimes(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return true
		}
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			m.Clear(fd)
		} else {
			clearTimes(v.Message())
		}
		return true
	})
}

// TestGRPCGoAnswersAsGoServerDoes sends the same calls to the edge served by
// Go's HTTP server and by grpc-go through the bridge, from grpc-go's own
// client: answers, codes and error details (validation's field
// violations) are the same, byte for byte, and so is a compressed request,
// a request over the edge's size bound and a method that does not exist.
// Reflection (a bidirectional stream) answers through the bridge too.
func TestGRPCGoAnswersAsGoServerDoes(t *testing.T) {
	t.Parallel()
	scope := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	big := &cachev1.PutRequest{Scope: scope, Key: "k",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: bytes.Repeat([]byte{'x'}, maxRequestBytes)}}}
	calls := []struct {
		name, method string
		req, res     proto.Message
		opts         []grpc.CallOption
		want         codes.Code
	}{
		{"get", "/cacheservice.v1.CacheService/Get", &cachev1.GetRequest{Scope: scope, Key: "k"}, new(cachev1.GetResponse), nil, codes.OK},
		{"get gzip", "/cacheservice.v1.CacheService/Get", &cachev1.GetRequest{Scope: scope, Key: "k"}, new(cachev1.GetResponse),
			[]grpc.CallOption{grpc.UseCompressor(gzip.Name)}, codes.OK},
		{"put", "/cacheservice.v1.CacheService/Put", &cachev1.PutRequest{Scope: scope, Key: "k",
			Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: []byte("x")}}}, new(cachev1.PutResponse), nil, codes.OK},
		{"claim", "/cacheservice.v1.CacheService/GetOrExtendReservation", &cachev1.GetOrExtendReservationRequest{
			Scope: scope, Key: "k", OwnerId: "me", HeartbeatInterval: durationpb.New(10 * time.Second)},
			new(cachev1.GetOrExtendReservationResponse), nil, codes.OK},
		{"invalid", "/cacheservice.v1.CacheService/Get", &cachev1.GetRequest{Scope: scope}, new(cachev1.GetResponse), nil, codes.InvalidArgument},
		{"too large", "/cacheservice.v1.CacheService/Put", big, new(cachev1.PutResponse), nil, codes.ResourceExhausted},
		{"no such method", "/cacheservice.v1.CacheService/Nope", &cachev1.GetRequest{}, new(cachev1.GetResponse), nil, codes.Unimplemented},
	}
	goServer, bridged := start(t, false), start(t, true)
	for _, c := range calls {
		want := call(t, goServer, c.method, c.req, c.res, c.opts...)
		got := call(t, bridged, c.method, c.req, c.res, c.opts...)
		if want.code != c.want {
			t.Errorf("%s: Go's server answered %v, want %v", c.name, want.code, c.want)
		}
		if got.code != want.code || !bytes.Equal(got.msg, want.msg) {
			t.Errorf("%s: through grpc-go %v %x, through Go's server %v %x", c.name, got.code, got.msg, want.code, want.msg)
		}
		// A grpc-go client keeps the status of an error from either server
		// whole, details included, except a message grpc-go writes itself.
		if c.want == codes.InvalidArgument && !bytes.Equal(got.status, want.status) {
			t.Errorf("%s: status through grpc-go %x, through Go's server %x", c.name, got.status, want.status)
		}
	}

	stream, err := reflectionpb.NewServerReflectionClient(bridged).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection through grpc-go: %v", err)
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "cacheservice.v1.CacheService") {
		t.Errorf("reflection through grpc-go lists %v, want cacheservice.v1.CacheService among them", names)
	}
	_ = stream.CloseSend()
}

// TestBinaryMetadataCrossesTheBridgeAsItCrossesGoServer sends binary
// metadata (a key ending in -bin, which gRPC carries base64-encoded) to an
// interceptor that reads it and answers with binary metadata of its own:
// through grpc-go the interceptor sees the bytes the client sent, and the
// client the bytes the interceptor set, as through Go's server.
func TestBinaryMetadataCrossesTheBridgeAsItCrossesGoServer(t *testing.T) {
	t.Parallel()
	sent := []byte{0, 1, 2, 0xfe, 0xff, '='}
	var seen [2][]byte
	for i, viaGRPCGo := range []bool{false, true} {
		echo := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				seen[i], _ = connect.DecodeBinaryHeader(req.Header().Get("X-Test-Bin"))
				res, err := next(ctx, req)
				if err == nil {
					res.Header().Set("X-Echo-Bin", connect.EncodeBinaryHeader(seen[i]))
				}
				return res, err
			}
		})
		conn := start(t, viaGRPCGo, echo)
		var header metadata.MD
		ctx := metadata.AppendToOutgoingContext(t.Context(), "x-test-bin", string(sent))
		err := conn.Invoke(ctx, "/cacheservice.v1.CacheService/Get",
			&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}, Key: "k"}, new(cachev1.GetResponse), grpc.Header(&header))
		if err != nil {
			t.Fatalf("viaGRPCGo=%v: %v", viaGRPCGo, err)
		}
		if !bytes.Equal(seen[i], sent) {
			t.Errorf("viaGRPCGo=%v: the interceptor saw %x, want %x", viaGRPCGo, seen[i], sent)
		}
		if got := header.Get("x-echo-bin"); len(got) != 1 || got[0] != string(sent) {
			t.Errorf("viaGRPCGo=%v: the client got %q, want %q", viaGRPCGo, got, sent)
		}
	}
}
