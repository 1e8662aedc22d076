package reliability

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// settledHeapMiB forces garbage collections in the server (through pprof's
// heap?gc=1) and returns its heap in use: what is live, not what awaits the
// collector. Two, since pooled buffers (sync.Pool) survive the first.
func (p *serverProc) settledHeapMiB(t testing.TB) float64 {
	t.Helper()
	for range 2 {
		resp, err := http1Client.Get(p.baseURL + "/debug/pprof/heap?gc=1&debug=1")
		if err != nil {
			t.Fatalf("force a GC in %s: %v", p.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return p.scrape(t, "go_memstats_heap_inuse_bytes") / (1 << 20)
}

// TestSlowReadersCannotPinResponseMemory is the HTTP/2 slow-reader attack:
// 30 connections that open no flow-control window (SETTINGS_INITIAL_WINDOW
// _SIZE 0, never a WINDOW_UPDATE) each ask for a 1 MiB entry on 10 streams,
// so no response body can ever be sent. Unbounded, the server holds all 300
// responses (300 MiB and more) for as long as the connections stay open.
// Now the response budget refuses what does not fit, the write deadline
// cuts the streams that never read, the heap stays bounded during the
// attack and comes back near its baseline after, the cuts are counted, and
// a normal client is served throughout.
func TestSlowReadersCannotPinResponseMemory(t *testing.T) {
	t.Parallel()
	const (
		conns, streams = 30, 10
		size           = 1<<20 - 1024 // an inline output just under the default 1 MiB limit
		writeTimeout   = time.Second
		budgetMiB      = 16
	)
	// Set by environment, so that a build without these flags still starts
	// (and shows what the attack does to it).
	srv := startServerEnv(t, "server", []string{
		"CACHESERVICE_WRITE_TIMEOUT=" + writeTimeout.String(),
		"CACHESERVICE_RESPONSE_BUDGET=" + strconv.Itoa(budgetMiB) + "MiB",
	}, "--database-url", pgtest.NewDatabase(t), "--pprof")
	client := srv.grpcClient()
	if _, err := client.Put(t.Context(), connect.NewRequest(&cachev1.PutRequest{Scope: scope(), Key: "big",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: bytes.Repeat([]byte{'x'}, size)}}})); err != nil {
		t.Fatalf("put the 1 MiB entry: %v", err)
	}
	// A warm-up read, so the baseline includes what any served Get leaves.
	if _, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "big"})); err != nil {
		t.Fatalf("get the 1 MiB entry: %v", err)
	}
	baseHeap, baseRSS := srv.settledHeapMiB(t), srv.rssKiB(t)>>10
	// Every attacking Get ends one of three ways: an error (resource_exhausted
	// from the budget; unavailable if it waited too long for the database
	// pool), or a response that is then cut by the write timeout.
	const getLabel = `procedure="/cacheservice.v1.CacheService/Get"`
	gets := func() (all, ok, timeouts float64) {
		return srv.scrape(t, "cacheservice_rpc_requests_total", getLabel),
			srv.scrape(t, "cacheservice_rpc_requests_total", getLabel, `code="ok"`),
			srv.scrape(t, `cacheservice_http_responses_cut_total{reason="write_timeout"`)
	}
	allBefore, okBefore, timeoutsBefore := gets()

	attackers := make([]*rawH2, 0, conns)
	defer func() {
		for _, c := range attackers {
			c.Close()
		}
	}()
	for range conns {
		c, err := dialRawH2(srv.addr, 0)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		attackers = append(attackers, c)
		for range streams {
			if _, err := c.grpcCall(srv.addr, "/cacheservice.v1.CacheService/Get",
				&cachev1.GetRequest{Scope: scope(), Key: "big"}); err != nil {
				t.Fatalf("attack: %v", err)
			}
		}
	}

	// Until every attacking Get is answered and every response is cut (for
	// at least a few write timeouts, at most 3 minutes on a loaded machine):
	// sample the heap and serve a normal client.
	var peakHeap, handled, served, cut float64
	peakRSS, normal := 0, 0
	var normalErrs []error
	start := time.Now()
	for time.Since(start) < 4*writeTimeout || ((handled < conns*streams || cut < served) && time.Since(start) < 3*time.Minute) {
		all, ok, timeouts := gets()
		handled, served, cut = all-allBefore-float64(normal), ok-okBefore, timeouts-timeoutsBefore
		peakHeap = max(peakHeap, srv.scrape(t, "go_memstats_heap_inuse_bytes")/(1<<20))
		peakRSS = max(peakRSS, srv.rssKiB(t)>>10)
		// Generous: the point is that it is served at all, on a shared
		// machine, while 300 reads of 1 MiB queue for the database pool.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, err := srv.connectClient().Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "small"}))
		cancel()
		normal++
		if connect.CodeOf(err) != connect.CodeNotFound {
			normalErrs = append(normalErrs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	all, ok, timeouts := gets()
	handled, served, cut = all-allBefore-float64(normal), ok-okBefore, timeouts-timeoutsBefore
	settledHeap, settledRSS := srv.settledHeapMiB(t), srv.rssKiB(t)>>10
	t.Logf("%v attacking Gets answered in %v: %v responses, %v of them cut by the write timeout; %v refused by the budget",
		handled, time.Since(start).Round(time.Millisecond), served, cut,
		srv.scrape(t, `cacheservice_http_responses_cut_total{reason="budget"`))
	t.Logf("heap in use: %.0f MiB before, %.0f MiB peak, %.0f MiB settled; RSS: %d MiB before, %d MiB peak, %d MiB settled",
		baseHeap, peakHeap, settledHeap, baseRSS, peakRSS, settledRSS)

	for _, err := range normalErrs {
		t.Errorf("a normal client's Get during the attack: %v, want not_found", err)
	}
	// 300 responses of 1 MiB would be 300 MiB; the budget and the pool's
	// reads in flight allow a small multiple of the budget.
	if bound := baseHeap + 6*budgetMiB; peakHeap > bound {
		t.Errorf("heap in use peaked at %.0f MiB during the attack, want under %.0f MiB", peakHeap, bound)
	}
	// Little stays: the database connections that read the 1 MiB row shed
	// their grown buffers (store/shed.go), where the pool of ten kept up to
	// 2 MiB each (the settled heap was 16-26 MiB).
	if bound := baseHeap + budgetMiB/2; settledHeap > bound {
		t.Errorf("heap in use settled at %.0f MiB after the attack, want under %.0f MiB (baseline %.0f)", settledHeap, bound, baseHeap)
	}
	if handled != conns*streams {
		t.Errorf("%v attacking Gets answered, want %d", handled, conns*streams)
	}
	if served == 0 || cut != served {
		t.Errorf("%v of the %v responses nobody read were cut by the write timeout, want all (and some)", cut, served)
	}
	// The attackers' connections stay open (only their streams were cut),
	// and the server still answers them and everyone else.
	if _, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "big"})); err != nil {
		t.Errorf("get the 1 MiB entry after the attack: %v", err)
	}
	if !srv.alive() {
		t.Fatal("server died")
	}
}
