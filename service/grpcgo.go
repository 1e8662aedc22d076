package service

// The gRPC protocol is served by grpc-go's transport in front of the edge:
// Go's HTTP/2 server with connect-go's gRPC handler costs twice as much CPU
// per call as grpc-go (docs/BENCHMARKS.md, "The floor's transport"). Each
// call grpc-go receives is handed to the edge as an http.Request (every
// interceptor, authentication, validation, the budget, the handlers), and
// the edge's answer goes back through grpc-go, so there is one
// implementation of everything but the transport.
//
// What Go's server gives the edge and grpc-go does not, the bridge makes up
// for: which server takes a connection is decided by its first request
// (grpcgo_sniff.go), so one port serves every protocol; and a ledger per
// connection (grpcgo_ledger.go) follows each response to the socket, so
// the response budget holds its bytes until they have left and the write
// timeout cuts a response that does not leave.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // requests compressed as the edge accepts them
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// GRPCOptions bound the gRPC server as Go's HTTP server is bounded.
type GRPCOptions struct {
	// MaxStreams bounds the concurrent streams of one connection; 0 means
	// 100.
	MaxStreams int
	// MaxRequestBytes bounds a request message; 0 means
	// DefaultMaxRequestBytes. Set it as the edge's.
	MaxRequestBytes int
	// WriteTimeout: a response with bytes queued and none written for this
	// long is cut, and its connection closed (grpc-go cannot reset one
	// stream from outside); a connection that takes no byte for this long
	// is closed. 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ReadTimeout bounds how long a call's request may take to arrive,
	// from its first read to its end; past it the connection is closed. 0
	// means none.
	ReadTimeout time.Duration
	// IdleTimeout closes a connection without calls for this long; 0 means
	// none.
	IdleTimeout time.Duration
	// OnCut is called for every response cut short; nil ignores them.
	OnCut func(Cut)
	// Stats, if set, counts what the server does.
	Stats *GRPCStats
	// Logger receives a handler's panic; nil discards it.
	Logger *slog.Logger
}

// GRPCStats counts what a GRPCServer does.
type GRPCStats struct {
	// Held is the bytes of responses queued and not yet written, over all
	// connections: what slow readers hold.
	Held atomic.Int64
	// Calls counts the calls served.
	Calls atomic.Int64
}

// streamWorkers is how many goroutines serve gRPC calls (see
// NewGRPCServer). Server CPU per call at 64 clients against none, in
// three runs: Get ×0.86, ×0.95, ×0.94; Put ×0.86, ×0.92, ×0.94; claim
// ×0.90, ×0.90, ×0.97; 16 workers, one run: ×0.96, ×1.01, ×0.93.
const streamWorkers = 64

// GRPCServer serves the gRPC protocol of an edge with grpc-go, on the
// connections SplitGRPC routes to it.
type GRPCServer struct {
	gs *grpc.Server
}

// NewGRPCServer returns a server of edge's gRPC protocol (edge is
// NewEdge's handler, with whatever the caller serves beside it).
func NewGRPCServer(edge http.Handler, opts GRPCOptions) *GRPCServer {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 100
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.OnCut == nil {
		opts.OnCut = func(Cut) {}
	}
	if opts.Stats == nil {
		opts.Stats = new(GRPCStats)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	gs := grpc.NewServer(
		grpc.Creds(ledgerCreds{opts: &opts}),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler((&bridge{h: edge, opts: &opts}).serve),
		// One byte over the edge's own bound, so that the edge, which
		// reads the envelope's length first, is the one to refuse.
		grpc.MaxRecvMsgSize(opts.MaxRequestBytes+1),
		grpc.MaxConcurrentStreams(uint32(opts.MaxStreams)),
		// What one client can make the server buffer of its requests, as
		// Go's server is set (cmd/cacheservice).
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		grpc.MaxHeaderListSize(64<<10),
		// A connection's write buffer only while it writes: idle
		// connections (and slow readers') then hold less.
		grpc.SharedWriteBuffer(true),
		// grpc-go's default read buffer is 32 KiB on every connection,
		// idle or not: an idle connection then held twice the heap Go's
		// server keeps for one (52 against 25 KiB). 4 KiB brings it to 26,
		// and cost nothing (Get ×0.87, claim ×0.95 in server CPU per call,
		// gRPC at 64 clients); with none, each frame's reads went through
		// the split's wrappers one by one (Get ×1.03).
		grpc.ReadBufferSize(4<<10),
		// Calls run on goroutines kept for the purpose where one is
		// free, not a new one each: a new goroutine starts on a 2 KiB
		// stack, which the edge grows to 32 KiB at once (stack.go), and
		// that copy was 8 % of the server's CPU per gRPC Get. A kept one
		// keeps its grown stack between calls until a collection finds it
		// idle and halves it (at most about 2 MiB for 64). A call that
		// finds no kept goroutine waiting (more than 64 at once, across
		// all connections, or one between calls) gets a new one, as
		// before. grpc-go marks the option experimental; go.mod pins the
		// version it was measured with.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: opts.IdleTimeout}),
		// grpc-go closes, by default, a connection whose client pings more
		// often than every 5 minutes; Go's server lets clients keep their
		// connections alive as they see fit, and so does this.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	return &GRPCServer{gs: gs}
}

// Serve serves the connections ln accepts until Stop or GracefulStop.
func (s *GRPCServer) Serve(ln net.Listener) error { return s.gs.Serve(ln) }

// GracefulStop stops accepting connections and waits for the calls in
// progress to finish.
func (s *GRPCServer) GracefulStop() { s.gs.GracefulStop() }

// Stop closes every connection at once.
func (s *GRPCServer) Stop() { s.gs.Stop() }

// SplitGRPC accepts connections on ln and hands each to one of two
// listeners: grpc if it is unencrypted HTTP/2 whose first request is gRPC
// (see sniff), other otherwise. Both fail if ln fails; when ln is closed,
// each stays until its server closes it (its shutdown). A closed one
// refuses (closes) the connections routed to it.
func SplitGRPC(ln net.Listener) (other, grpc net.Listener) {
	h1, h2 := newQueue(ln.Addr()), newQueue(ln.Addr())
	var sniffing sync.Map // connections being routed, closed with ln
	go func() {
		defer sniffing.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		var delay time.Duration
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				// Closed by the caller, shutting down: each server stops
				// its own listener, so that it sees its own shutdown.
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as net/http still does
				// As Go's server does: an accept that fails for now (no file
				// descriptors left, say) is tried again, backing off.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			if err != nil {
				h1.close() // fails both servers, as a failed listener fails Go's
				h2.close()
				return
			}
			delay = 0
			sniffing.Store(c, nil)
			go func() {
				defer sniffing.Delete(c)
				route(c, h1, h2)
			}()
		}
	}()
	return h1, h2
}

// route hands c to h2 if it is unencrypted HTTP/2 whose first request is
// gRPC, else to h1.
func route(c net.Conn, h1, h2 *queue) {
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start, err := r.Peek(3)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	var conn net.Conn = &peeked{Conn: c, r: r}
	to := h1
	if string(start) == "PRI" {
		var grpc bool
		if conn, grpc, err = sniff(c, r, sniffWait); err != nil {
			_ = c.Close()
			return
		}
		if grpc {
			to = h2
		}
	}
	if !to.put(conn) {
		_ = c.Close()
	}
}

// peeked is a connection whose first bytes were read into r.
type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (c *peeked) Read(p []byte) (int, error) { return c.r.Read(p) }

// queue is a listener of connections that another listener accepted.
type queue struct {
	conns    chan net.Conn
	done     chan struct{}
	addr     net.Addr
	stopOnce sync.Once
}

func newQueue(addr net.Addr) *queue {
	return &queue{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *queue) put(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *queue) close()         { q.stopOnce.Do(func() { close(q.done) }) }
func (q *queue) Close() error   { q.close(); return nil }
func (q *queue) Addr() net.Addr { return q.addr }

// rawCodec passes messages through as bytes: the edge decodes and encodes
// them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// bridge hands every call grpc-go receives to h.
type bridge struct {
	h    http.Handler
	opts *GRPCOptions
}

// dropped are request headers grpc-go has dealt with: the request arrives
// decompressed, and the response is compressed by grpc-go, not the edge.
var dropped = map[string]bool{":authority": true, "grpc-encoding": true, "grpc-accept-encoding": true}

func (b *bridge) serve(_ any, ss grpc.ServerStream) (err error) {
	b.opts.Stats.Calls.Add(1)
	defer func() {
		// Go's server recovers a handler's panic and ends only its
		// request; grpc-go would end the process.
		if p := recover(); p != nil {
			method, _ := grpc.MethodFromServerStream(ss)
			b.opts.Logger.Error("panic serving a gRPC call", slog.String("procedure", method),
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			err = grpcstatus.Error(codes.Internal, "internal error")
		}
	}()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	header := make(http.Header, len(md))
	for k, v := range md {
		if dropped[k] {
			continue
		}
		if strings.HasSuffix(k, "-bin") {
			// grpc-go decodes binary metadata; the edge reads it encoded,
			// as it arrives over HTTP.
			encoded := make([]string, len(v))
			for i, x := range v {
				encoded[i] = base64.RawStdEncoding.EncodeToString([]byte(x))
			}
			v = encoded
		}
		header[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	if _, ok := header["Content-Type"]; !ok {
		header["Content-Type"] = []string{"application/grpc"}
	}
	r := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Path: method}, RequestURI: method,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: header, ContentLength: -1,
	}
	if v := md[":authority"]; len(v) > 0 {
		r.Host = v[0]
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.RemoteAddr = p.Addr.String()
	}
	if e := md["grpc-encoding"]; len(e) > 0 && e[0] != "identity" {
		// The ledger counts the response's bytes as the edge wrote them:
		// grpc-go would otherwise answer compressed, as it was asked.
		_ = grpc.SetSendCompressor(ctx, "identity")
	}
	l := ledgerOf(ctx)
	r.Body = &body{ss: ss, ledger: l, timeout: b.opts.ReadTimeout, maxBytes: b.opts.MaxRequestBytes}
	defer r.Body.(*body).done()
	w := &writer{ss: ss, ledger: l, header: make(http.Header, 4)}
	b.h.ServeHTTP(w, r.WithContext(ctx))
	return w.status()
}

// body reads the call's messages as gRPC envelopes, the form the edge
// reads.
type body struct {
	ss      grpc.ServerStream
	ledger  *ledger       // of the call's connection, closed by the read timeout
	timeout time.Duration // bounds the request from its first read; 0: none
	timer   *time.Timer
	// maxBytes is the edge's request bound, which grpc-go enforced first.
	maxBytes int
	next     []byte // unread part of the current envelope
	eof      bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.timer == nil && b.timeout > 0 && b.ledger != nil && !b.eof {
		// As Go's server's ReadTimeout: a request that does not arrive in
		// time ends (here with its connection: grpc-go cannot reset one
		// stream from outside).
		b.timer = time.AfterFunc(b.timeout, b.ledger.closeConn)
	}
	for len(b.next) == 0 {
		if b.eof {
			b.done()
			return 0, io.EOF
		}
		var msg []byte
		if err := b.ss.RecvMsg(&msg); err == io.EOF {
			b.eof = true
		} else if grpcstatus.Code(err) == codes.ResourceExhausted {
			// Over grpc-go's bound (the edge's plus one byte): the error
			// the edge gives a body over its own.
			return 0, &http.MaxBytesError{Limit: int64(b.maxBytes)}
		} else if err != nil {
			return 0, err
		} else {
			b.next = make([]byte, 5+len(msg))
			binary.BigEndian.PutUint32(b.next[1:5], uint32(len(msg)))
			copy(b.next[5:], msg)
		}
	}
	n := copy(p, b.next)
	b.next = b.next[n:]
	return n, nil
}

func (*body) Close() error { return nil }

// done stops the read timeout.
func (b *body) done() {
	if b.timer != nil {
		b.timer.Stop()
	}
}

// releaseWhenWritten calls release once the response has left, or never
// will: grpc-go sends it after the handler returns (see ledger).
func (w *writer) releaseWhenWritten(release func()) {
	if w.account == nil {
		release()
		return
	}
	w.ledger.whenEnded(w.account, release)
}

// writer takes the edge's gRPC response (headers, envelopes, and trailers
// as net/http takes them) and sends it through grpc-go.
type writer struct {
	ss      grpc.ServerStream
	ledger  *ledger   // of the call's connection; nil for none
	account *response // in ledger, once the headers are queued
	header  http.Header
	code    int
	started bool
	pending []byte // an envelope not yet whole
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

// Flush is a no-op: each whole envelope is sent as it is written.
func (w *writer) Flush() {}

// reserved are response headers grpc-go writes itself.
var reserved = map[string]bool{"Content-Type": true, "Grpc-Encoding": true, "Grpc-Accept-Encoding": true, "Trailer": true}

func (w *writer) start() {
	if w.started {
		return
	}
	w.started = true
	if w.code == 0 {
		w.code = http.StatusOK
	}
	md := metadata.MD{}
	for k, v := range w.header {
		if !reserved[k] && !strings.HasPrefix(k, http.TrailerPrefix) {
			md[strings.ToLower(k)] = binaryDecoded(k, v)
		}
	}
	if w.ledger == nil {
		_ = w.ss.SetHeader(md)
		return
	}
	// Always sent, even before an error: the ledger knows the response by
	// its headers (an error's status then goes in trailers, as Go's
	// server sends it too).
	w.account, _ = w.ledger.register(func() error { return w.ss.SendHeader(md) },
		func() bool { return errors.Is(w.ss.Context().Err(), context.Canceled) })
}

func (w *writer) Write(p []byte) (int, error) {
	w.start()
	w.pending = append(w.pending, p...)
	for len(w.pending) >= 5 {
		n := int(binary.BigEndian.Uint32(w.pending[1:5]))
		if len(w.pending) < 5+n {
			break
		}
		msg := w.pending[5 : 5+n : 5+n]
		if w.account != nil {
			w.ledger.queue(w.account, 5+n)
		}
		if err := w.ss.SendMsg(&msg); err != nil {
			// Never sent: the stream ended (a reset, or its connection).
			if w.account != nil {
				w.ledger.abandon(w.account)
			}
			return 0, err
		}
		w.pending = w.pending[5+n:]
	}
	if len(w.pending) == 0 {
		w.pending = nil // the sent messages are grpc-go's now
	}
	return len(p), nil
}

// status reads the gRPC status the edge wrote in its trailers (or, for an
// answer before any message, its headers) and returns it as grpc-go's
// error, the other trailers set on the stream.
func (w *writer) status() error {
	w.start()
	trailer := metadata.MD{}
	for k, v := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			trailer[strings.ToLower(name)] = binaryDecoded(name, v)
		}
	}
	get := func(name string) string {
		if v := trailer[name]; len(v) > 0 {
			return v[0]
		}
		return binaryDecoded(name, []string{w.header.Get(name)})[0]
	}
	code, message, details := get("grpc-status"), get("grpc-message"), get("grpc-status-details-bin")
	delete(trailer, "grpc-status")
	delete(trailer, "grpc-message")
	delete(trailer, "grpc-status-details-bin")
	if len(trailer) > 0 {
		w.ss.SetTrailer(trailer)
	}
	if code == "" {
		return grpcstatus.Error(httpCode(w.code), "HTTP status "+strconv.Itoa(w.code))
	}
	c, err := strconv.Atoi(code)
	if err != nil {
		return grpcstatus.Error(codes.Unknown, "malformed grpc-status")
	}
	if c == 0 {
		return nil
	}
	if details != "" {
		if st, err := decodeDetails(details); err == nil {
			return grpcstatus.ErrorProto(st)
		}
	}
	msg, err := url.PathUnescape(message)
	if err != nil {
		msg = message
	}
	return grpcstatus.Error(codes.Code(c), msg)
}

// binaryDecoded returns the values of header key as grpc-go takes them:
// binary ones (a key ending in -bin) decoded, since grpc-go encodes them
// again; a value that is not base64 is kept as it is.
func binaryDecoded(key string, values []string) []string {
	if !strings.HasSuffix(strings.ToLower(key), "-bin") {
		return values
	}
	out := make([]string, len(values))
	for i, v := range values {
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		if err != nil {
			out[i] = v
			continue
		}
		out[i] = string(raw)
	}
	return out
}

// httpCode is the gRPC code a client gives an HTTP status without one
// (gRPC's "HTTP to gRPC Status Code Mapping").
func httpCode(status int) codes.Code {
	switch status {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}

// decodeDetails reads the status the edge wrote in grpc-status-details-bin
// (already decoded from base64 with the other binary metadata).
func decodeDetails(v string) (*status.Status, error) {
	st := new(status.Status)
	if err := proto.Unmarshal([]byte(v), st); err != nil {
		return nil, err
	}
	if st.GetCode() == 0 {
		return nil, errors.New("details without a code")
	}
	return st, nil
}
