package service_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cacheservice/cacheservice/cmd/cachebench/floor"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/syncbuf"
	"github.com/cacheservice/cacheservice/service"
)

// serveBridged serves the real edge over the floor's handlers on a
// loopback port until the test ends: gRPC with grpc-go, the rest with Go's
// server.
func serveBridged(t *testing.T, opts service.GRPCOptions) net.Listener {
	t.Helper()
	return serveBridgedWith(t, floor.Handlers(), opts)
}

// serveBridgedWith is serveBridged over the given handlers.
func serveBridgedWith(t *testing.T, handlers service.Handlers, opts service.GRPCOptions) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: service.NewEdge(nil, service.Options{Handlers: handlers}), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	other, grpcConns := service.SplitGRPC(ln)
	gs := service.NewGRPCServer(srv.Handler, opts)
	go func() { _ = gs.Serve(grpcConns) }()
	go func() { _ = srv.Serve(other) }()
	t.Cleanup(func() { _ = srv.Close(); gs.Stop(); _ = ln.Close() })
	return ln
}

// rawConn is a hand-driven HTTP/2 connection whose streams get no
// flow-control window unless the test opens one.
type rawConn struct {
	conn   net.Conn
	mu     sync.Mutex
	framer *http2.Framer
	ended  chan uint32   // streams the server ended (trailers)
	heads  chan uint32   // streams the server sent response headers on
	closed chan struct{} // closed when the server closes the connection
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{conn: conn, framer: http2.NewFramer(conn, conn), ended: make(chan uint32, 100), heads: make(chan uint32, 100), closed: make(chan struct{})}
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.framer.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.closed)
		for {
			f, err := c.framer.ReadFrame()
			if err != nil {
				return
			}
			c.mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = c.framer.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = c.framer.WritePing(true, f.Data)
				}
			case *http2.MetaHeadersFrame:
				if f.StreamEnded() {
					c.ended <- f.StreamID
				} else {
					c.heads <- f.StreamID
				}
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// get sends a gRPC Get on stream id.
func (c *rawConn) get(t *testing.T, id uint32) {
	t.Helper()
	body, _ := proto.Marshal(&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}, Key: "k"})
	msg := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(body)))
	msg = append(msg, body...)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "test"},
		{":path", "/cacheservice.v1.CacheService/Get"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.framer.WriteData(id, true, msg); err != nil {
		t.Fatal(err)
	}
}

func (c *rawConn) open(t *testing.T, id uint32) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.framer.WriteWindowUpdate(id, 1<<20); err != nil {
		t.Fatal(err)
	}
}

// TestAStalledResponseIsCutAndOnlyIt opens 20 Gets on one connection whose
// streams have no window, and opens the window of all but one: those 19
// are answered, and the ledger, which matched each response to its stream
// by the frames grpc-go wrote, holds exactly the stalled one's bytes until
// the write timeout cuts it, counted once. A well-behaved client on another
// connection, busy throughout, is never cut, and nothing stays held.
func TestAStalledResponseIsCutAndOnlyIt(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	stats := new(service.GRPCStats)
	var cuts atomic.Int64
	ln := serveBridged(t, service.GRPCOptions{MaxStreams: 100, MaxRequestBytes: 1 << 20, WriteTimeout: timeout, Stats: stats,
		OnCut: func(c service.Cut) {
			if c == service.CutWriteTimeout {
				cuts.Add(1)
			}
		}})

	busy, stop := context.WithCancel(t.Context())
	defer stop()
	client, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var wg sync.WaitGroup
	var clientErr error
	wg.Go(func() {
		for busy.Err() == nil {
			err := client.Invoke(busy, "/cacheservice.v1.CacheService/Get",
				&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}, Key: "k"}, new(cachev1.GetResponse))
			if err != nil && busy.Err() == nil {
				clientErr = err
				return
			}
		}
	})

	raw := dialRaw(t, ln.Addr().String())
	const streams, stalled = 20, uint32(7)
	for i := range streams {
		raw.get(t, uint32(2*i+1))
	}
	for i := range streams {
		if id := uint32(2*i + 1); id != stalled {
			raw.open(t, id)
		}
	}
	answered := map[uint32]bool{}
	start := time.Now()
	for len(answered) < streams-1 {
		select {
		case id := <-raw.ended:
			answered[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d open streams answered", len(answered), streams-1)
		}
	}
	if answered[stalled] {
		t.Fatal("the stalled stream was answered")
	}
	if held := stats.Held.Load(); held <= 0 {
		t.Errorf("%d bytes held while a response is stalled, want its bytes", held)
	}
	select {
	case <-raw.closed:
		if waited := time.Since(start); waited < timeout*9/10 {
			t.Errorf("connection cut after %v, before the write timeout (%v)", waited, timeout)
		}
	case <-time.After(10 * timeout):
		t.Fatal("the stalled response was never cut")
	}
	stop()
	wg.Wait()
	if clientErr != nil && !errors.Is(clientErr, context.Canceled) {
		t.Errorf("the busy client failed: %v", clientErr)
	}
	for deadline := time.Now().Add(5 * time.Second); cuts.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // counted just after the connection is closed
	}
	if cuts := cuts.Load(); cuts != 1 {
		t.Errorf("%d responses cut, want the stalled one", cuts)
	}
	for deadline := time.Now().Add(5 * time.Second); stats.Held.Load() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if held := stats.Held.Load(); held != 0 {
		t.Errorf("%d bytes still held after every response ended", held)
	}
}

// TestEachProtocolFindsItsServerOnOnePort calls one port over unencrypted
// HTTP/2 with the three protocols connect-go speaks, each on connections of
// its own, and once more over HTTP/1.1: gRPC is served by grpc-go, the
// Connect protocol and gRPC-Web by Go's server, and every call is
// answered, so sniffing the first request (and the SETTINGS frame it sends
// ahead of the server's) leaves each client's connection whole.
func TestEachProtocolFindsItsServerOnOnePort(t *testing.T) {
	t.Parallel()
	stats := new(service.GRPCStats)
	ln := serveBridged(t, service.GRPCOptions{MaxStreams: 100, MaxRequestBytes: 1 << 20, Stats: stats})

	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	url := "http://" + ln.Addr().String()
	for _, c := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
		grpcGo bool
	}{
		{"grpc", &http.Client{Transport: h2c}, []connect.ClientOption{connect.WithGRPC()}, true},
		{"connect over h2c", &http.Client{Transport: h2c.Clone()}, nil, false},
		{"grpc-web over h2c", &http.Client{Transport: h2c.Clone()}, []connect.ClientOption{connect.WithGRPCWeb()}, false},
		{"connect over HTTP/1.1", &http.Client{Transport: &http.Transport{}}, nil, false},
	} {
		before := stats.Calls.Load()
		client := cachev1connect.NewCacheServiceClient(c.client, url, c.opts...)
		for range 3 {
			res, err := client.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}, Key: "k"}))
			if err != nil || len(res.Msg.GetOutput().GetInline()) != floor.PayloadBytes {
				t.Fatalf("%s: Get = %v, %v", c.name, res, err)
			}
		}
		if got := stats.Calls.Load() - before; (got == 3) != c.grpcGo || got != 0 && got != 3 {
			t.Errorf("%s: grpc-go served %d of 3 calls; want all %v", c.name, got, c.grpcGo)
		}
	}
}

// reset cancels stream id, as a client that gave up does.
func (c *rawConn) reset(t *testing.T, id uint32) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.framer.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
}

// TestAResetAfterTheHeadersEndsTheResponse has a client reset, again and
// again, Gets whose responses cannot be sent (no window) once their headers
// have come: grpc-go then drops what was queued and writes nothing more, so
// only the client's reset tells. Nothing stays held, nothing is cut, and
// the connection is not closed by the write timeout.
func TestAResetAfterTheHeadersEndsTheResponse(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	stats := new(service.GRPCStats)
	var cuts atomic.Int64
	ln := serveBridged(t, service.GRPCOptions{MaxStreams: 100, WriteTimeout: timeout, Stats: stats,
		OnCut: func(service.Cut) { cuts.Add(1) }})
	raw := dialRaw(t, ln.Addr().String())
	for i := range 20 {
		id := uint32(2*i + 1)
		raw.get(t, id)
		select {
		case got := <-raw.heads:
			if got != id {
				t.Fatalf("headers of stream %d, want %d", got, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no response headers on stream %d", id)
		}
		raw.reset(t, id)
	}
	for deadline := time.Now().Add(5 * time.Second); stats.Held.Load() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if held := stats.Held.Load(); held != 0 {
		t.Errorf("%d bytes held after every response was reset", held)
	}
	time.Sleep(3 * timeout)
	select {
	case <-raw.closed:
		t.Error("the connection was closed: a reset response was taken for a stalled one")
	default:
	}
	if n := cuts.Load(); n != 0 {
		t.Errorf("%d responses cut, want none", n)
	}
}

// panicky answers Get with a panic.
type panicky struct {
	cachev1connect.CacheServiceHandler
}

func (panicky) Get(context.Context, *connect.Request[cachev1.GetRequest]) (*connect.Response[cachev1.GetResponse], error) {
	panic("a bug")
}

// TestAPanicEndsOnlyItsCall has a handler panic under grpc-go, which
// recovers none: the call ends internal, the panic is logged, and the
// server serves the next call.
func TestAPanicEndsOnlyItsCall(t *testing.T) {
	t.Parallel()
	var logs syncbuf.Buffer
	handlers := floor.Handlers()
	handlers.Cache = panicky{handlers.Cache}
	ln := serveBridgedWith(t, handlers, service.GRPCOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	client, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	scope := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	err = client.Invoke(t.Context(), "/cacheservice.v1.CacheService/Get", &cachev1.GetRequest{Scope: scope, Key: "k"}, new(cachev1.GetResponse))
	if status.Code(err) != codes.Internal {
		t.Errorf("Get that panics = %v, want internal", err)
	}
	if err := client.Invoke(t.Context(), "/cacheservice.v1.CacheService/Put", &cachev1.PutRequest{Scope: scope, Key: "k",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://x"}}}, new(cachev1.PutResponse)); err != nil {
		t.Errorf("Put after the panic: %v", err)
	}
	if !strings.Contains(logs.String(), "a bug") {
		t.Errorf("the panic was not logged: %q", logs.String())
	}
}
