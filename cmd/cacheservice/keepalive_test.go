package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeptAliveHTTP1ConnectionServesAfterIdle reuses one HTTP/1.1
// connection after it sat idle for longer than the write timeout. The edge
// sets a write deadline for each response on the connection itself, and a
// deadline that outlived its response would have passed by then: nothing
// of what comes next may be written under it, not a CORS preflight (which
// the RPC handlers never see), not the "100 Continue" net/http sends when a
// handler reads the body, and not an RPC's answer. (net/http clears the
// deadline after each response today; this holds the edge to that too.)
func TestKeptAliveHTTP1ConnectionServesAfterIdle(t *testing.T) {
	t.Parallel()
	const writeTimeout = 50 * time.Millisecond
	const origin = "https://app.example.com"
	s := startServer(t, "--write-timeout", writeTimeout.String(), "--cors-allowed-origins", origin)
	var dials atomic.Int32
	tr := &http.Transport{Protocols: new(http.Protocols), ExpectContinueTimeout: callTimeout}
	tr.Protocols.SetHTTP1(true)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: callTimeout}
	get := s.url + "/cacheservice.v1.CacheService/Get"
	body := `{"scope":{"org":"o","project":"p","domain":"d"},"key":"k"}`

	do := func(what string, req *http.Request, wantStatus int) *http.Response {
		t.Helper()
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != wantStatus {
			t.Fatalf("%s: status %d, want %d", what, res.StatusCode, wantStatus)
		}
		return res
	}
	rpc := func(what string, expectContinue bool) {
		t.Helper()
		req, err := http.NewRequestWithContext(callCtx(t), http.MethodPost, get, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if expectContinue {
			req.Header.Set("Expect", "100-continue")
		}
		do(what, req, http.StatusNotFound) // Connect's not_found: the key has no entry
	}
	idle := func() { time.Sleep(4 * writeTimeout) }

	rpc("first Get", false)
	idle()
	preflight, err := http.NewRequestWithContext(callCtx(t), http.MethodOptions, get, nil)
	if err != nil {
		t.Fatal(err)
	}
	preflight.Header.Set("Origin", origin)
	preflight.Header.Set("Access-Control-Request-Method", http.MethodPost)
	preflight.Header.Set("Access-Control-Request-Headers", "content-type")
	if res := do("preflight after idle", preflight, http.StatusNoContent); res.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("preflight after idle: Access-Control-Allow-Origin = %q, want %q", res.Header.Get("Access-Control-Allow-Origin"), origin)
	}
	idle()
	rpc("Get with Expect: 100-continue after idle", true)
	idle()
	rpc("Get after idle", false)
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialed, want every request on one kept-alive connection", n)
	}
}
