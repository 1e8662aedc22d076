package floor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	"github.com/cacheservice/cacheservice/service"
)

// edge serves the real edge over the floor's handlers (no manager, no
// database) on a loopback port, counting the calls the caller's
// interceptor sees.
func edge(t *testing.T) (url string, calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	count := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			calls.Add(1)
			return next(ctx, req)
		}
	})
	srv := httptest.NewUnstartedServer(service.NewEdge(nil, service.Options{
		Handlers:     floor.Handlers(),
		Interceptors: []connect.Interceptor{count},
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, calls
}

// TestFloorAnswersThroughTheRealEdge calls every workload's RPC over
// Connect and gRPC: the canned answers come back, through the caller's
// interceptors, and validation still refuses a bad request, so the floor
// pays for everything the real edge does but the service.
func TestFloorAnswersThroughTheRealEdge(t *testing.T) {
	t.Parallel()
	url, calls := edge(t)
	scope := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	for _, opt := range []connect.ClientOption{connect.WithProtoJSON(), connect.WithGRPC()} {
		client := cachev1connect.NewCacheServiceClient(&http.Client{Transport: h2Transport()}, url, opt)
		ctx := t.Context()
		got, err := client.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope, Key: "k"}))
		if err != nil || len(got.Msg.GetOutput().GetInline()) != floor.PayloadBytes {
			t.Fatalf("Get = %v, %v; want a %d-byte output", got, err, floor.PayloadBytes)
		}
		if _, err := client.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: scope, Key: "k",
			Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: []byte("x")}}})); err != nil {
			t.Fatalf("Put: %v", err)
		}
		claim, err := client.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
			Scope: scope, Key: "k", OwnerId: "me", HeartbeatInterval: durationpb.New(10e9)}))
		if err != nil || claim.Msg.GetReservation().GetOwnerId() != "me" {
			t.Fatalf("claim = %v, %v; want owner me", claim, err)
		}
		_, err = client.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "key") {
			t.Fatalf("Get without a key: %v, want invalid_argument naming key", err)
		}
	}
	if n := calls.Load(); n != 8 {
		t.Errorf("the caller's interceptor saw %d calls, want 8", n)
	}

	flyte := flytecachev2connect.NewCacheServiceClient(http.DefaultClient, url)
	got, err := flyte.Get(t.Context(), connect.NewRequest(&flytecachev2.GetCacheRequest{
		BaseRequest: &flytecache.GetCacheRequest{Key: "k"},
		Identifier:  &flytecachev2.Identifier{Org: "o", Project: "p", Domain: "d"},
	}))
	if err != nil || got.Msg.GetOutput().GetOutputUri() == "" {
		t.Fatalf("Flyte Get = %v, %v; want an output", got, err)
	}
}

// TestProductionBinaryHasNoFloor checks that the server built without the
// cachebench_floor tag does not contain this package, and with it does.
func TestProductionBinaryHasNoFloor(t *testing.T) {
	t.Parallel()
	const pkg = "github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	for _, tags := range []string{"", "cachebench_floor"} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", "github.com/cacheservice/cacheservice/cmd/cacheservice").Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		has := strings.Contains("\n"+string(out), "\n"+pkg+"\n")
		if has != (tags != "") {
			t.Errorf("with tags %q, cmd/cacheservice depends on the floor: %v", tags, has)
		}
	}
}

func h2Transport() *http.Transport {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}
