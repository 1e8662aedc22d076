package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// TestBothTransportsAnswerTheCannedCalls serves each transport on a
// loopback port and calls it as cachebench does: gRPC over HTTP/2 and the
// Connect protocol over HTTP/1.1 get the floor's answers. The Connect
// protocol over HTTP/2 tells the transports apart: grpc-go, which then
// owns every HTTP/2 connection, refuses it.
func TestBothTransportsAnswerTheCannedCalls(t *testing.T) {
	t.Parallel()
	http1 := &http.Client{}
	h2c := &http.Client{Transport: &http.Transport{
		Protocols: func() *http.Protocols {
			p := new(http.Protocols)
			p.SetUnencryptedHTTP2(true)
			return p
		}(),
	}}
	for _, tr := range []string{"grpc-go", "net/http"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			url := start(t, tr)
			calls := []struct {
				name     string
				client   *http.Client
				opts     []connect.ClientOption
				answered bool
			}{
				{"grpc", h2c, []connect.ClientOption{connect.WithGRPC()}, true},
				{"connect over HTTP/1.1", http1, nil, true},
				{"connect over HTTP/2", h2c, nil, tr == "net/http"},
			}
			for _, c := range calls {
				client := cachev1connect.NewCacheServiceClient(c.client, url, c.opts...)
				err := callEveryMethod(t, client)
				if c.answered && err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
				// grpc-go answers a request that is not gRPC with HTTP 415,
				// which Connect's client reads as unknown.
				if !c.answered && (connect.CodeOf(err) != connect.CodeUnknown || !strings.Contains(err.Error(), "415")) {
					t.Errorf("%s: %v, want grpc-go's 415", c.name, err)
				}
			}
		})
	}
}

// callEveryMethod calls the five methods of the service and checks the
// canned answers, returning the first error.
func callEveryMethod(t *testing.T, client cachev1connect.CacheServiceClient) error {
	t.Helper()
	ctx := t.Context()
	got, err := client.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Key: "k"}))
	if err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	if n := len(got.Msg.GetOutput().GetInline()); n != floor.PayloadBytes {
		t.Errorf("Get answered %d bytes of output, want the canned %d", n, floor.PayloadBytes)
	}
	if _, err := client.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Key: "k"})); err != nil {
		return fmt.Errorf("Put: %w", err)
	}
	if _, err := client.Delete(ctx, connect.NewRequest(&cachev1.DeleteRequest{Key: "k"})); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	claim, err := client.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Key: "k", OwnerId: "me"}))
	if err != nil {
		return fmt.Errorf("GetOrExtendReservation: %w", err)
	}
	if owner := claim.Msg.GetReservation().GetOwnerId(); owner != "me" {
		t.Errorf("claim granted to %q, want its caller", owner)
	}
	if _, err := client.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Key: "k", OwnerId: "me"})); err != nil {
		return fmt.Errorf("ReleaseReservation: %w", err)
	}
	return nil
}

// start serves transport on a loopback port until the test ends.
func start(t *testing.T, transport string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { _ = serve(ln, transport) }()
	return "http://" + ln.Addr().String()
}

func TestAddrFlagIsFoundAmongTheServersFlags(t *testing.T) {
	t.Parallel()
	got, err := addrFlag([]string{"serve", "--addr", "127.0.0.1:1", "--database-url", "postgres://x"})
	if err != nil || got != "127.0.0.1:1" {
		t.Errorf("addrFlag = %q, %v; want 127.0.0.1:1", got, err)
	}
	if _, err := addrFlag([]string{"serve"}); err == nil {
		t.Error("addrFlag without --addr: no error")
	}
	if err := serve(nil, "quic"); err == nil {
		t.Error("serve with an unknown transport: no error")
	}
}
