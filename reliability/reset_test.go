package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// TestResetStreamsAreCanceledNotServerTrouble has clients give up on
// thousands of calls: HTTP/2 streams reset right after they are sent, as a
// gRPC client does on cancel. A client's cancel is no trouble of the
// server's: the metrics say canceled (never unknown), the server logs no
// warning for any of them, and it serves a normal client afterwards.
func TestResetStreamsAreCanceledNotServerTrouble(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "server", "--database-url", pgtest.NewDatabase(t))
	client := srv.grpcClient()
	if _, err := client.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: "k", Output: uriOf("s3://k")})); err != nil {
		t.Fatalf("seed: %v", err)
	}
	const (
		conns  = 4
		rounds = 40
		batch  = 50 // streams in flight per connection, under the server's limit
	)
	calls := []struct {
		procedure string
		msg       func(i int) proto.Message
	}{
		{"Get", func(int) proto.Message { return &cachev1.GetRequest{Scope: scope(), Key: "k"} }},
		{"GetOrExtendReservation", func(i int) proto.Message {
			return &cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: fmt.Sprintf("r%d", i%7),
				OwnerId: fmt.Sprintf("o%d", i), HeartbeatInterval: durationpb.New(time.Second)}
		}},
		{"Put", func(i int) proto.Message {
			return &cachev1.PutRequest{Scope: scope(), Key: fmt.Sprintf("p%d", i%7), Output: uriOf("s3://p"), Overwrite: true}
		}},
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Go(func() {
			conn, err := dialRawH2(srv.addr, 1<<20)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			for r := range rounds {
				if ctx.Err() != nil {
					errs <- fmt.Errorf("connection %d: out of time at round %d", c, r)
					return
				}
				ids := make([]uint32, 0, batch)
				for i := range batch {
					call := calls[(r*batch+i)%len(calls)]
					id, err := conn.grpcCall(srv.addr, "/cacheservice.v1.CacheService/"+call.procedure, call.msg(r*batch+i))
					if err != nil {
						errs <- fmt.Errorf("connection %d: %w", c, err)
						return
					}
					ids = append(ids, id)
				}
				// Some reset at once, some a moment later, mid-call.
				if r%2 == 1 {
					time.Sleep(time.Duration(r%5) * time.Millisecond)
				}
				for _, id := range ids {
					if err := conn.reset(id); err != nil {
						errs <- fmt.Errorf("connection %d: reset: %w", c, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The server is fine and answers a normal client.
	if _, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "k"})); err != nil {
		t.Fatalf("get after the resets: %v", err)
	}
	// Handlers of reset streams finish on their own; give them a moment.
	var canceled, unknown float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		canceled = srv.scrape(t, `cacheservice_rpc_requests_total{code="canceled"`)
		unknown = srv.scrape(t, `cacheservice_rpc_requests_total{code="unknown"`)
		if unknown > 0 || time.Now().After(deadline) || canceled > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the last handlers log
	canceled = srv.scrape(t, `cacheservice_rpc_requests_total{code="canceled"`)
	unknown = srv.scrape(t, `cacheservice_rpc_requests_total{code="unknown"`)
	warns := srv.logsAt("WARN")
	t.Logf("%d streams reset: %v RPCs counted canceled, %v unknown, %d WARN lines",
		conns*rounds*batch, canceled, unknown, len(warns))
	if unknown != 0 {
		t.Errorf("%v reset calls counted as code=unknown, want canceled", unknown)
	}
	if canceled == 0 {
		t.Errorf("no reset call counted as code=canceled")
	}
	// net/http's own connection errors (its rapid-reset guard may answer a
	// reset flood with ENHANCE_YOUR_CALM) warn at most 10 times per 10s;
	// no failed call warns at all.
	httpWarns := 0
	for _, w := range warns {
		if w["source"] == "net/http" {
			httpWarns++
			continue
		}
		t.Errorf("WARN line for a client's cancel: %v", w)
	}
	if httpWarns > 10*(1+int(time.Since(start)/(10*time.Second))) {
		t.Errorf("%d WARN lines from net/http, want at most 10 per 10s", httpWarns)
	}
	if errs := srv.logsAt("ERROR"); len(errs) > 0 {
		t.Errorf("%d ERROR lines, first: %v", len(errs), errs[0])
	}
}

// scrape reads the server's /metrics and sums the samples of the series
// whose line starts with prefix (a metric name, optionally with its first
// labels: `name{code="canceled"`) and contains every one of contains.
func (p *serverProc) scrape(t testing.TB, prefix string, contains ...string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http1Client.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", p.name, err)
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{' && rest[0] != ',' && rest[0] != '}') {
			continue // a longer name that shares the prefix
		}
		if !containsAll(line, contains) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
