// Command transportfloor is the transport floor without the edge: the
// canned answers of package floor served bare, so that cachebench can
// compare transports on their own. It is a measuring tool, never part of
// the server.
//
// Built as it is, it serves gRPC without TLS (unencrypted HTTP/2
// connections whose first request is gRPC, see service.SplitGRPC) with
// grpc-go, and everything else (the Connect protocol, and cachebench's
// readiness probe) with connect-go on Go's HTTP server. Built with
//
//	go build -ldflags '-X main.transport=net/http' ./cmd/cachebench/transportfloor
//
// it serves everything with connect-go on Go's HTTP server, with the HTTP/2
// limits the server sets. cachebench starts it as it starts the server:
//
//	transportfloor serve --addr 127.0.0.1:PORT [other flags, ignored]
//
// Only our CacheService is served, so every cachebench protocol but flyte
// works with both builds. Left out on purpose: the edge (interceptors,
// validation, the response budget, authentication).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/service"
)

// transport is "grpc-go" or "net/http"; set with -ldflags -X.
var transport = "grpc-go"

func main() {
	addr, err := addrFlag(os.Args[1:])
	if err == nil {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			err = serve(ln, transport)
		}
	}
	fmt.Fprintln(os.Stderr, "transportfloor:", err)
	os.Exit(1)
}

// addrFlag finds --addr in the arguments cachebench passes to a server
// (serve --addr A --database-url U ...); the others mean nothing here.
func addrFlag(args []string) (string, error) {
	for i, a := range args {
		if (a == "--addr" || a == "-addr") && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	return "", errors.New("usage: transportfloor serve --addr HOST:PORT")
}

// serve answers on ln until it fails: with connect-go on Go's HTTP server,
// and with grpc-go for gRPC without TLS when transport is "grpc-go". Both
// stop when it returns.
func serve(ln net.Listener, transport string) error {
	canned := floor.Handlers().Cache
	mux := http.NewServeMux()
	mux.Handle(cachev1connect.NewCacheServiceHandler(canned,
		connect.WithCompressMinBytes(4096))) // as the server: no gzip for small responses
	hs := newHTTPServer(mux)
	defer hs.Close()
	switch transport {
	case "net/http":
		return hs.Serve(ln)
	case "grpc-go":
	default:
		return fmt.Errorf("unknown transport %q", transport)
	}
	gs := grpc.NewServer(grpc.MaxConcurrentStreams(maxStreams))
	defer gs.Stop()
	gs.RegisterService(cacheServiceDesc(canned), nil)
	http1, http2 := service.SplitGRPC(ln)
	go func() { _ = gs.Serve(http2) }()
	return hs.Serve(http1)
}

// maxStreams is the server's default --http2-max-streams.
const maxStreams = 100

// newHTTPServer is Go's HTTP server with the limits cacheservice sets on it
// by default (cmd/cacheservice's newHTTPServer), which cost per call too:
// a write deadline around every write to a connection, among others.
func newHTTPServer(h http.Handler) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         protocols,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          maxStreams,
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
			WriteByteTimeout:              10 * time.Second,
		},
	}
}

// cacheServiceDesc serves impl's unary methods with grpc-go: each decodes
// its request, calls impl as the Connect handler would, and returns the
// message, so both transports encode the very same answers.
func cacheServiceDesc(impl cachev1connect.CacheServiceHandler) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: cachev1connect.CacheServiceName,
		HandlerType: (*cachev1connect.CacheServiceHandler)(nil),
		Methods: []grpc.MethodDesc{
			unary("Get", impl.Get),
			unary("Put", impl.Put),
			unary("Delete", impl.Delete),
			unary("GetOrExtendReservation", impl.GetOrExtendReservation),
			unary("ReleaseReservation", impl.ReleaseReservation),
		},
		Metadata: cachev1.File_cacheservice_v1_cache_proto.Path(),
	}
}

func unary[Req, Res any](name string, call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := decode(req); err != nil {
			return nil, err
		}
		res, err := call(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}}
}
