package reliability

import (
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestIdleConnectionsCostLittleMemory opens 400 gRPC connections, each
// served one call and then left idle, under each of the transports that
// serve gRPC, and bounds the server's heap per connection: what an
// operator sizing --max-connections pays for each client that keeps a
// connection open. Measured here, Go's HTTP/2 server keeps about 31 KiB;
// grpc-go kept 61 with its default 32 KiB read buffer, and 29-33 with the
// 4 KiB one it is given.
func TestIdleConnectionsCostLittleMemory(t *testing.T) {
	t.Parallel()
	const conns, boundKiB = 400, 45
	for _, transport := range []string{"grpc-go", "net/http"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, "server", "--database-url", pgtest.NewDatabase(t), "--pprof", "--grpc-transport", transport)
			before := srv.settledHeapMiB(t)
			transports := make([]*http.Transport, 0, conns)
			clients := make([]cachev1connect.CacheServiceClient, 0, conns)
			defer func() {
				for _, tr := range transports {
					tr.CloseIdleConnections()
				}
			}()
			// get calls Get with client and reports whether it went on a
			// connection used before.
			get := func(client cachev1connect.CacheServiceClient) (reused bool) {
				ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
					GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
				})
				_, err := client.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "absent"}))
				if connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("Get: %v, want not_found", err)
				}
				return reused
			}
			for range conns {
				tr := &http.Transport{Protocols: h2cOnly()}
				transports = append(transports, tr)
				client := cachev1connect.NewCacheServiceClient(&http.Client{Timeout: 30 * time.Second, Transport: tr}, srv.baseURL, connect.WithGRPC())
				clients = append(clients, client)
				get(client)
			}
			after := srv.settledHeapMiB(t)
			// The heap was measured with every connection open: each is
			// still there to serve another call.
			for i, client := range clients {
				if !get(client) {
					t.Fatalf("connection %d was closed before the heap was measured", i)
				}
			}
			perConn := (after - before) * 1024 / conns
			t.Logf("%s, %d idle connections: heap in use %.1f -> %.1f MiB, %.1f KiB each", transport, conns, before, after, perConn)
			if perConn > boundKiB {
				t.Errorf("each idle connection holds %.1f KiB of heap, want at most %d", perConn, boundKiB)
			}
		})
	}
}
