// Package grpcbridge serves gRPC with grpc-go's transport in front of the
// server's own edge, to measure what that transport would save the real
// server: each call that grpc-go receives is handed to the edge (every
// interceptor, validation, authentication, the handlers, the manager and
// the store) as an http.Request, and the edge's answer goes back through
// grpc-go. It is a measuring tool, linked only into the cacheservice
// build with the cachebench_grpcgo tag, never into the server.
//
// grpc-go tells a handler neither when a response has left nor lets it
// reset one stream, both of which the edge's write timeout and response
// budget rely on. So each connection keeps a ledger (ledger.go) that reads
// the frames grpc-go writes to it: it knows, per response, what is queued
// and what has left, and closes a connection whose response has waited the
// write timeout with nothing written. It costs nothing measurable (see
// docs/BENCHMARKS.md), and shows how a server could keep those bounds.
//
// One port still serves every protocol: an unencrypted HTTP/2 connection
// goes to grpc-go only if its first request is gRPC (sniff.go); the
// Connect protocol and gRPC-Web go to Go's server, and so does HTTP/1.1.
//
// What it leaves out, and a server would need: the ledger's held bytes and
// cuts are its own (Stats), not the edge's response budget and metrics;
// grpc-go is not given the server's other limits (a read timeout,
// keepalive enforcement matched to Go's server, the write deadline on a
// connection that takes no byte); a client that sends the Connect
// protocol on a connection that began with gRPC is refused; TLS
// connections stay with Go's server.
package grpcbridge

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // requests compressed as the edge accepts them
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Serve serves srv's handler on ln until srv is shut down or ln fails, as
// srv.Serve(ln) does: gRPC without TLS with grpc-go (see Split), the rest
// with srv. Shutting srv down stops grpc-go too, gracefully.
func Serve(srv *http.Server, ln net.Listener, opts Options) error {
	if opts.Stats == nil {
		opts.Stats = new(Stats)
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	gs := grpc.NewServer(
		grpc.Creds(ledgerCreds{timeout: opts.WriteTimeout, stats: opts.Stats}),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler((&bridge{h: srv.Handler, stats: opts.Stats}).serve),
		// One byte over the edge's own bound, so that the edge, which
		// reads the envelope's length first, is the one to refuse.
		grpc.MaxRecvMsgSize(opts.MaxRequestBytes+1),
		grpc.MaxConcurrentStreams(uint32(opts.MaxStreams)),
		grpc.InitialWindowSize(1<<20), // what Go's server may buffer, as the server sets it
		grpc.InitialConnWindowSize(1<<20),
		grpc.MaxHeaderListSize(64<<10),
	)
	srv.RegisterOnShutdown(gs.GracefulStop)
	http1, http2 := Split(ln)
	go func() { _ = gs.Serve(http2) }()
	err := srv.Serve(http1)
	_ = ln.Close()
	return err
}

// Options are Serve's bounds, as the server's flags set them.
type Options struct {
	MaxStreams      int
	MaxRequestBytes int
	// WriteTimeout: a response with bytes queued and none written for this
	// long is cut (its connection closed).
	WriteTimeout time.Duration
	// Stats, if set, counts what the connections' ledgers see.
	Stats *Stats
}

// Split accepts connections on ln and hands each to one of two listeners:
// grpc if it is unencrypted HTTP/2 whose first request is gRPC (see
// sniff), other otherwise. Both fail once ln does; a closed one refuses
// (closes) the connections routed to it.
func Split(ln net.Listener) (other, grpc net.Listener) {
	h1, h2 := newQueue(ln.Addr()), newQueue(ln.Addr())
	go func() {
		defer h2.close()
		defer h1.close()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go route(c, h1, h2)
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
	h     http.Handler
	stats *Stats
}

// dropped are request headers grpc-go has dealt with: the request arrives
// decompressed, and the response is compressed by grpc-go, not the edge.
var dropped = map[string]bool{":authority": true, "grpc-encoding": true, "grpc-accept-encoding": true}

func (b *bridge) serve(_ any, ss grpc.ServerStream) error {
	b.stats.Calls.Add(1)
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	header := make(http.Header, len(md))
	for k, v := range md {
		if !dropped[k] {
			header[textproto.CanonicalMIMEHeaderKey(k)] = v
		}
	}
	if _, ok := header["Content-Type"]; !ok {
		header["Content-Type"] = []string{"application/grpc"}
	}
	r := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Path: method}, RequestURI: method,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: header, Body: &body{ss: ss}, ContentLength: -1,
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
	w := &writer{ss: ss, ledger: ledgerOf(ctx), header: make(http.Header, 4)}
	b.h.ServeHTTP(w, r.WithContext(ctx))
	return w.status()
}

// body reads the call's messages as gRPC envelopes, the form the edge
// reads.
type body struct {
	ss   grpc.ServerStream
	next []byte // unread part of the current envelope
	eof  bool
}

func (b *body) Read(p []byte) (int, error) {
	for len(b.next) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		var msg []byte
		if err := b.ss.RecvMsg(&msg); err == io.EOF {
			b.eof = true
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
			md[strings.ToLower(k)] = v
		}
	}
	if w.ledger == nil {
		_ = w.ss.SetHeader(md)
		return
	}
	// Always sent, even before an error: the ledger knows the response by
	// its headers (an error's status then goes in trailers, as Go's
	// server sends it too).
	w.account, _ = w.ledger.register(func() error { return w.ss.SendHeader(md) })
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
			trailer[strings.ToLower(name)] = v
		}
	}
	get := func(name string) string {
		if v := trailer[name]; len(v) > 0 {
			return v[0]
		}
		return w.header.Get(name)
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

func decodeDetails(v string) (*status.Status, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil {
		return nil, err
	}
	st := new(status.Status)
	if err := proto.Unmarshal(raw, st); err != nil {
		return nil, err
	}
	if st.GetCode() == 0 {
		return nil, errors.New("details without a code")
	}
	return st, nil
}
