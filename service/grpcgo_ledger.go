package service

import (
	"context"
	"encoding/binary"
	"iter"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// A ledger follows, from the bytes grpc-go writes to one connection, how
// much of each response has left: what the server's edge learns from Go's
// HTTP server as each write returns, and grpc-go does not tell. grpc-go
// writes the HTTP/2 frames; the ledger reads their 9-byte headers as they
// go to the socket.
//
// A response is matched to its stream by its HEADERS frame: the bridge
// registers a response and queues its headers (ServerStream.SendHeader)
// under the ledger's lock, and grpc-go's writer sends response headers in
// the order they were queued, so the n-th HEADERS frame that does not end
// its stream is the n-th registered response's. Its DATA frames then count
// as written; its trailers (HEADERS that end the stream) or a RST_STREAM
// end it.
//
// A response with bytes queued and none written for the write timeout is
// cut, as Go's server cuts a write that misses its deadline; grpc-go cannot
// reset one stream from outside, so the connection is closed.
type ledger struct {
	conn net.Conn
	opts *GRPCOptions

	mu        sync.Mutex
	expecting []*response          // registered, headers not yet written, oldest first
	streams   map[uint32]*response // by stream, headers written and not yet ended
	frame     [9]byte              // the frame header being read
	frameN    int                  // bytes of it read
	payload   int                  // bytes of the current frame's payload still to come
	data      *response            // the response the current DATA frame is of
	timer     *time.Timer          // checks for stalled responses while any is queued
	cut       bool
	gone      bool // the connection has closed: nothing registered is ever sent

	// The client's frames, read only for its resets (a reset writes no
	// frame of the server's): where the reader is in them, and the streams
	// it reset before the ledger knew them.
	in     inbound
	resets map[uint32]bool
}

// maxResets bounds the streams a ledger remembers the client reset before
// their headers went; past it they are forgotten (the memory is the
// client's to fill).
const maxResets = 1024

// inbound follows the frame headers a client sends: after its 24-byte
// connection preface, frame after frame.
type inbound struct {
	preface int     // preface bytes still to skip
	frame   [9]byte // the frame header being read
	frameN  int
	payload int // bytes of the current frame's payload still to come
}

// response is one response's account in its connection's ledger.
type response struct {
	queued, written int64     // bytes of DATA payload; under ledger.mu
	progress        time.Time // when it last had every byte written or wrote one; under ledger.mu
	ended           bool      // every byte left, or never will
	onEnd           func()    // called once it ends
	maybe           bool      // its stream was reset as it registered: its headers may never go
	// byCut: it ended because its connection was cut for the write
	// timeout, before all its bytes were queued; counted: it is among
	// the cuts reported. Both under ledger.mu.
	byCut, counted bool
}

func newLedger(conn net.Conn, opts *GRPCOptions) *ledger {
	return &ledger{conn: conn, opts: opts, streams: make(map[uint32]*response), in: inbound{preface: prefaceLen},
		resets: make(map[uint32]bool)}
}

// read follows the client's frames in p, which the connection has just
// read, and ends the account of every stream the client resets: grpc-go
// then drops what the stream had queued, trailers included, and writes no
// frame that would tell.
func (l *ledger) read(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := &l.in
	for len(p) > 0 {
		switch {
		case in.preface > 0:
			n := min(in.preface, len(p))
			in.preface -= n
			p = p[n:]
		case in.payload > 0:
			n := min(in.payload, len(p))
			in.payload -= n
			p = p[n:]
		default:
			n := copy(in.frame[in.frameN:], p)
			in.frameN += n
			p = p[n:]
			if in.frameN < len(in.frame) {
				return
			}
			in.frameN = 0
			in.payload = int(in.frame[0])<<16 | int(in.frame[1])<<8 | int(in.frame[2])
			if in.frame[3] == frameRSTStream {
				stream := binary.BigEndian.Uint32(in.frame[5:9]) & (1<<31 - 1)
				if l.streams[stream] != nil {
					l.end(stream)
				} else {
					if len(l.resets) >= maxResets {
						l.forgetOldResets()
					}
					l.resets[stream] = true
				}
			}
		}
	}
}

// forgetOldResets forgets the older half of the remembered resets (the
// lower stream ids: a stream a response may still be waiting on is a
// recent one). The caller holds mu.
func (l *ledger) forgetOldResets() {
	ids := slices.Sorted(maps.Keys(l.resets))
	for _, id := range ids[:len(ids)/2] {
		delete(l.resets, id)
	}
}

// register adds a response and queues its headers with send, in one step
// as far as the frame order goes (see ledger). A failed send registers
// nothing.
//
// reset reports whether the client has reset the stream. grpc-go drops
// the headers of a stream the client reset between its check of the
// stream and its queueing of them, yet send returns nil; a reset cancels
// the stream's context before that, so a stream reset by the time send
// returns leaves it open whether the headers will go, and the response is
// marked maybe (see wrote).
func (l *ledger) register(send func() error, reset func() bool) (*response, error) {
	r := &response{}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		// Its connection was cut for another response: nothing of this
		// one will go, and if it has bytes to send it is cut too (queue).
		r.ended, r.byCut = true, true
		return r, nil
	}
	if l.gone {
		return nil, net.ErrClosed
	}
	l.expecting = append(l.expecting, r)
	if err := send(); err != nil {
		l.expecting = l.expecting[:len(l.expecting)-1] // ours is last: the lock is held
		return nil, err
	}
	r.maybe = reset()
	return r, nil
}

// queue records n more bytes of r's DATA payload about to be queued.
func (l *ledger) queue(r *response, n int) {
	l.mu.Lock()
	if r.ended || l.cut {
		// Served after its connection was cut for the write timeout (for
		// another response; closed or about to be): none of it will go,
		// and it is cut too, as Go's server, which resets only the stalled
		// stream, would have cut it at its own timeout. One ended
		// otherwise (sent, reset, abandoned) is not.
		cut := (r.byCut || !r.ended) && !r.counted
		r.counted = r.counted || cut
		l.mu.Unlock()
		if cut {
			l.opts.OnCut(CutWriteTimeout)
		}
		return
	}
	defer l.mu.Unlock()
	if r.queued == r.written {
		r.progress = time.Now()
	}
	r.queued += int64(n)
	l.opts.Stats.Held.Add(int64(n))
	if l.timer == nil {
		l.timer = time.AfterFunc(l.opts.WriteTimeout, l.check)
	}
}

// wrote reads the frame headers in p, which the connection is writing,
// and returns how many responses p ends (their trailers are in it).
func (l *ledger) wrote(p []byte) (ended int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(p) > 0 {
		if l.payload > 0 {
			n := min(l.payload, len(p))
			if l.data != nil && !l.data.ended {
				l.data.written += int64(n)
				l.data.progress = time.Now()
				l.opts.Stats.Held.Add(-int64(n))
			}
			l.payload -= n
			p = p[n:]
			continue
		}
		n := copy(l.frame[l.frameN:], p)
		l.frameN += n
		p = p[n:]
		if l.frameN < len(l.frame) {
			return ended
		}
		l.frameN = 0
		length := int(l.frame[0])<<16 | int(l.frame[1])<<8 | int(l.frame[2])
		typ, flags := l.frame[3], l.frame[4]
		stream := binary.BigEndian.Uint32(l.frame[5:9]) & (1<<31 - 1)
		l.payload, l.data = length, nil
		switch typ {
		case frameData:
			l.data = l.streams[stream]
		case frameHeaders:
			if flags&flagEndStream != 0 {
				if l.streams[stream] != nil {
					ended++
				}
				l.end(stream)
				break
			}
			// A maybe response's headers, had they gone, would be on a
			// stream the client reset: headers on another mean they never
			// will (see register).
			for len(l.expecting) > 0 && l.expecting[0].maybe && !l.resets[stream] {
				l.expecting[0].finish(l.opts.Stats)
				l.expecting = l.expecting[1:]
			}
			if len(l.expecting) > 0 {
				l.streams[stream] = l.expecting[0]
				l.expecting = l.expecting[1:]
				if l.resets[stream] {
					// The client reset it already: grpc-go writes nothing
					// more for it.
					l.end(stream)
				}
			}
			delete(l.resets, stream)
		case frameRSTStream:
			l.end(stream)
		}
	}
	return ended
}

const (
	frameData      = 0x0
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	flagEndStream  = 0x1
)

// end closes stream's account: whatever it had queued has left or never
// will.
func (l *ledger) end(stream uint32) {
	r := l.streams[stream]
	if r == nil {
		return
	}
	delete(l.streams, stream)
	r.finish(l.opts.Stats)
}

// finish ends r's account. The caller holds its ledger's lock.
func (r *response) finish(stats *GRPCStats) {
	if r.ended {
		return
	}
	r.ended = true
	stats.Held.Add(-(r.queued - r.written))
	if r.onEnd != nil {
		r.onEnd()
	}
}

// abandon ends r, whose bytes will never go (grpc-go refused them: its
// stream is done). It keeps its place in the order: its headers may still
// go.
func (l *ledger) abandon(r *response) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.finish(l.opts.Stats)
}

// whenEnded calls f once r has ended (at once if it has).
func (l *ledger) whenEnded(r *response, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.ended {
		f()
		return
	}
	r.onEnd = f
}

// check cuts the connection if a response has waited the timeout with
// bytes queued and none written, and otherwise looks again when the
// oldest wait would reach it.
func (l *ledger) check() {
	if cut := l.stalled(); cut > 0 {
		_ = l.conn.Close() // not under mu: closing ends the accounts
		for range cut {
			l.opts.OnCut(CutWriteTimeout)
		}
	}
}

// stalled returns how many responses are cut if the connection is to be
// cut (see check): every one not yet sent.
func (l *ledger) stalled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.cut {
		return 0
	}
	now := time.Now()
	next := time.Duration(0)
	stalled, unsent := false, 0
	// Those whose headers have not gone yet count too: they wait as long.
	for r := range l.pending() {
		unsent++
		waited := now.Sub(r.progress)
		if waited >= l.opts.WriteTimeout {
			stalled = true
		} else if left := l.opts.WriteTimeout - waited; next == 0 || left < next {
			next = left
		}
	}
	if stalled {
		// Every response not yet sent is cut with the connection, as Go's
		// server would cut each (HTTP/1.1's cut takes its connection too).
		l.cut = true
		for r := range l.pending() {
			r.counted = true
		}
		return unsent
	}
	if next > 0 {
		l.timer = time.AfterFunc(next, l.check)
	}
	return 0
}

// pending yields the responses with bytes queued and not yet written,
// their headers gone or not. The caller holds mu.
func (l *ledger) pending() iter.Seq[*response] {
	return func(yield func(*response) bool) {
		for _, r := range l.streams {
			if !r.ended && r.queued > r.written && !yield(r) {
				return
			}
		}
		for _, r := range l.expecting {
			if !r.ended && r.queued > r.written && !yield(r) {
				return
			}
		}
	}
}

// failed cuts the connection whose write failed by the write timeout: the
// client took nothing for that long. Every response with bytes queued, and
// those of the failed write, is cut.
func (l *ledger) failed(inWrite int) {
	l.mu.Lock()
	cut := 0
	if !l.cut {
		l.cut = true
		cut = inWrite
		for r := range l.pending() {
			r.counted = true
			cut++
		}
	}
	l.mu.Unlock()
	_ = l.conn.Close()
	for range cut {
		l.opts.OnCut(CutWriteTimeout)
	}
}

// closeConn closes the connection (the read timeout's end of a request).
func (l *ledger) closeConn() { _ = l.conn.Close() }

// closed ends every account of the connection, which has closed.
func (l *ledger) closed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gone = true
	// What is still open when a cut connection closes ends by the cut. A
	// response whose stream the client reset before its headers went is
	// among them: the ledger cannot tell it from the others (grpc-go does
	// not say which stream a call is on), so if it is served later it is
	// counted as cut where Go's server would have seen the reset.
	for stream, r := range l.streams {
		r.byCut = l.cut && !r.ended
		l.end(stream)
	}
	for _, r := range l.expecting {
		r.byCut = l.cut && !r.ended
		r.finish(l.opts.Stats)
	}
	l.expecting = nil
	if l.timer != nil {
		l.timer.Stop()
	}
}

// ledgerConn is a connection that reports what it writes to its ledger.
type ledgerConn struct {
	net.Conn
	ledger    *ledger
	closeOnce sync.Once
}

func (c *ledgerConn) Write(p []byte) (int, error) {
	// Read before the bytes go: a client that has its response's headers
	// may reset the stream at once, and the ledger must know the stream
	// by then. What one write holds is bounded (grpc-go's write buffer),
	// and a write that does not complete closes the connection below,
	// which ends every account.
	ended := c.ledger.wrote(p)
	// As Go's server does (HTTP2Config.WriteByteTimeout): a connection that
	// takes no byte for the write timeout is closed. grpc-go's writer stops
	// at a failed write but leaves the connection open; closing it ends
	// the reader, and with it the transport.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.ledger.opts.WriteTimeout))
	n, err := c.Conn.Write(p)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.ledger.failed(ended)
		} else {
			_ = c.Close()
		}
	}
	return n, err
}

func (c *ledgerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.ledger.read(p[:n])
	return n, err
}

func (c *ledgerConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.ledger.closed)
	return err
}

// ledgerCreds gives each connection grpc-go serves a ledger, which the
// bridge finds in the peer's AuthInfo. It secures nothing.
type ledgerCreds struct {
	opts *GRPCOptions
}

type ledgerInfo struct {
	credentials.CommonAuthInfo
	ledger *ledger
}

func (ledgerInfo) AuthType() string { return "insecure" }

func (c ledgerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	lc := &ledgerConn{Conn: conn}
	lc.ledger = newLedger(lc, c.opts)
	return lc, ledgerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, ledger: lc.ledger}, nil
}

func (ledgerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	panic("grpcbridge: server credentials only")
}

func (ledgerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (c ledgerCreds) Clone() credentials.TransportCredentials { return c }

func (ledgerCreds) OverrideServerName(string) error { return nil }

// ledgerOf returns the ledger of the connection ctx's call came on.
func ledgerOf(ctx context.Context) *ledger {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(ledgerInfo); ok {
			return info.ledger
		}
	}
	return nil
}
