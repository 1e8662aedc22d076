package service

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frame is an HTTP/2 frame as grpc-go writes it: a 9-byte header, then the
// payload.
func frame(typ, flags byte, stream uint32, payload int) []byte {
	b := make([]byte, 9+payload)
	b[0], b[1], b[2] = byte(payload>>16), byte(payload>>8), byte(payload)
	b[3], b[4] = typ, flags
	binary.BigEndian.PutUint32(b[5:9], stream)
	return b
}

// pipeLedger is a ledger of one end of a pipe with writeTimeout, counting
// its cuts; client is the other end, closed at the test's end.
func pipeLedger(t *testing.T, writeTimeout time.Duration) (l *ledger, client net.Conn, cuts *atomic.Int64, stats *GRPCStats) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	cuts, stats = new(atomic.Int64), new(GRPCStats)
	return newLedger(server, &GRPCOptions{WriteTimeout: writeTimeout, Stats: stats, OnCut: func(Cut) { cuts.Add(1) }}), client, cuts, stats
}

// TestLedgerMatchesResponsesToStreamsByTheirHeaders registers three
// responses, then feeds the ledger the frames of their streams in the
// order grpc-go writes them (headers in the order they were queued, then
// interleaved data, a frame split across writes, trailers and a reset):
// each response's bytes count where they belong, and what is held is what
// was queued and not written.
func TestLedgerMatchesResponsesToStreamsByTheirHeaders(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	stats := new(GRPCStats)
	l := newLedger(server, &GRPCOptions{WriteTimeout: time.Hour, Stats: stats, OnCut: func(Cut) {}})
	var rs []*response
	for range 3 {
		r, err := l.register(func() error { return nil }, func() bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	a, b, c := rs[0], rs[1], rs[2]
	l.queue(a, 100)
	l.queue(b, 50)
	l.queue(c, 70)
	// Streams 5, 3 and 9 got their headers in registration order.
	l.wrote(frame(frameHeaders, 0x4, 5, 12))
	l.wrote(frame(frameHeaders, 0x4, 3, 12))
	l.wrote(frame(frameHeaders, 0x4, 9, 12))
	d := frame(frameData, 0, 3, 50)
	l.wrote(d[:4]) // a frame header split across writes
	l.wrote(d[4:30])
	l.wrote(d[30:])
	l.wrote(frame(frameData, 0, 5, 60))
	l.wrote(frame(frameHeaders, 0x5, 3, 8)) // b's trailers
	if a.written != 60 || b.written != 50 || !b.ended || c.written != 0 {
		t.Fatalf("a wrote %d, b %d (ended %v), c %d; want 60, 50 (ended), 0", a.written, b.written, b.ended, c.written)
	}
	if held := stats.Held.Load(); held != 40+70 {
		t.Errorf("held %d, want 110 (40 of a, 70 of c)", held)
	}
	l.wrote(frame(frameRSTStream, 0, 9, 4)) // c reset: its bytes never leave
	l.wrote(frame(frameData, 0, 5, 40))
	l.wrote(frame(frameHeaders, 0x5, 5, 8))
	if !a.ended || !c.ended || a.written != 100 {
		t.Errorf("a ended %v wrote %d, c ended %v; want both ended, a 100", a.ended, a.written, c.ended)
	}
	if held := stats.Held.Load(); held != 0 {
		t.Errorf("held %d after every stream ended, want 0", held)
	}
}

// TestSniffReadsNoFurtherThanItsBound sends a connection's preface and then
// frames that are not a request's headers, more than sniff reads before it
// gives up: the connection is refused, and what the server read stays
// within the bound; the empty SETTINGS the server sends first arrives.
func TestSniffReadsNoFurtherThanItsBound(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	defer server.Close()
	done := make(chan error, 1)
	go func() {
		_, _, err := sniff(server, bufio.NewReader(server), 10*time.Second)
		server.Close() // the route closes a refused connection
		done <- err
	}()
	go func() { _, _ = io.Copy(io.Discard, client) }() // the server's SETTINGS
	if _, err := client.Write([]byte(http2Preface)); err != nil {
		t.Fatal(err)
	}
	ping := frame(0x6, 0, 0, 8)
	written := 0
	for written <= sniffMax {
		if _, err := client.Write(ping); err != nil {
			break // refused: the server stopped reading
		}
		written += len(ping)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("sniff accepted a connection that sent no request headers")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sniff read past its bound")
	}
}

// TestLedgerSkipsHeadersThatNeverWent registers a response whose stream the
// client reset as it registered (its headers may have been dropped), then
// one that is whole: headers on a stream the client did not reset are the
// second one's, and the first ends with nothing held; headers on a stream
// the client did reset are the first one's, which ends at once.
func TestLedgerSkipsHeadersThatNeverWent(t *testing.T) {
	for _, resetFirst := range []bool{false, true} {
		server, client := net.Pipe()
		stats := new(GRPCStats)
		l := newLedger(server, &GRPCOptions{WriteTimeout: time.Hour, Stats: stats, OnCut: func(Cut) {}})
		l.read([]byte(http2Preface))
		l.read(frame(frameRSTStream, 0, 1, 4)) // stream 1, before its headers
		dropped, _ := l.register(func() error { return nil }, func() bool { return true })
		whole, _ := l.register(func() error { return nil }, func() bool { return false })
		l.queue(dropped, 10)
		l.queue(whole, 20)
		if resetFirst {
			l.wrote(frame(frameHeaders, flagEndHdrs, 1, 8))
			// The maybe response's, on a stream the client reset: ended at
			// once, and the whole one still waits for its headers.
			if !dropped.ended || len(l.expecting) != 1 || l.expecting[0] != whole {
				t.Errorf("headers on the reset stream: maybe response ended %v, waiting %d", dropped.ended, len(l.expecting))
			}
		} else {
			l.wrote(frame(frameHeaders, flagEndHdrs, 3, 8))
			if l.streams[3] != whole || !dropped.ended {
				t.Errorf("headers on stream 3: matched %p, want the whole response %p; maybe response ended %v", l.streams[3], whole, dropped.ended)
			}
			if held := stats.Held.Load(); held != 20 {
				t.Errorf("held %d, want the whole response's 20", held)
			}
		}
		server.Close()
		client.Close()
	}
}

// TestLedgerWatchesResponsesWhoseHeadersHaveNotGone has the write timeout's
// first check find the only response on the wire fully written and another
// still waiting for its headers: the watch goes on, and once that one's
// headers go and its bytes never do, it is cut and the connection closed.
func TestLedgerWatchesResponsesWhoseHeadersHaveNotGone(t *testing.T) {
	const timeout = 50 * time.Millisecond
	l, client, cuts, _ := pipeLedger(t, timeout)
	a, _ := l.register(func() error { return nil }, func() bool { return false })
	b, _ := l.register(func() error { return nil }, func() bool { return false })
	l.queue(a, 10)
	l.wrote(frame(frameHeaders, flagEndHdrs, 1, 8))
	l.wrote(frame(frameData, 0, 1, 10))
	time.Sleep(timeout / 2)
	l.queue(b, 10)              // b's headers have not gone at the first check
	time.Sleep(timeout * 3 / 4) // past the first check
	l.wrote(frame(frameHeaders, flagEndHdrs, 3, 8))
	closed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, client); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * timeout):
		t.Fatal("the stalled response, queued after the first check, was never cut")
	}
	if n := cuts.Load(); n != 1 {
		t.Errorf("%d cuts, want 1", n)
	}
}

// TestAnAbandonedResponseIsNotWatched abandons a response whose bytes
// grpc-go refused (its stream was reset as its headers were queued, which
// may have dropped them): on an otherwise quiet connection it holds
// nothing and is never taken for a stalled one.
func TestAnAbandonedResponseIsNotWatched(t *testing.T) {
	const timeout = 50 * time.Millisecond
	l, _, cuts, stats := pipeLedger(t, timeout)
	r, _ := l.register(func() error { return nil }, func() bool { return true })
	l.queue(r, 10)
	l.abandon(r)
	time.Sleep(3 * timeout)
	if n := cuts.Load(); n != 0 {
		t.Errorf("%d cuts of a quiet connection, want none", n)
	}
	if held := stats.Held.Load(); held != 0 {
		t.Errorf("held %d after the response was abandoned, want 0", held)
	}
	if len(l.expecting) != 1 {
		t.Errorf("%d responses wait for headers, want the abandoned one, in its place", len(l.expecting))
	}
}

// TestResponsesServedAfterTheirConnectionWasCutAreCut cuts a connection
// for one stalled response, then serves three more of its calls: one
// registered before the cut with nothing queued yet (it queues between the
// cut and the connection's close), one registered after
// it, and one that answers with an error (no bytes to send). The two with
// bytes are cut too, each once, as Go's server would cut each at its own
// timeout; the error is not. Without this, the slow-reader attack found
// responses that were neither written nor counted as cut.
func TestResponsesServedAfterTheirConnectionWasCutAreCut(t *testing.T) {
	const timeout = 50 * time.Millisecond
	l, client, cuts, stats := pipeLedger(t, timeout)
	register := func() *response {
		r, err := l.register(func() error { return nil }, func() bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	stalled, early := register(), register()
	l.queue(stalled, 10)
	closed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, client); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * timeout):
		t.Fatal("the stalled response was never cut")
	}
	// The cut is counted just after the connection closes.
	for deadline := time.Now().Add(10 * time.Second); cuts.Load() == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
	}
	if n := cuts.Load(); n != 1 {
		t.Fatalf("%d cuts when the connection was cut, want 1 (the stalled response)", n)
	}
	// Between the cut and the connection's close, early queues its bytes.
	l.queue(early, 10)
	l.closed() // as the connection's Close tells it
	late, failed := register(), register()
	l.queue(late, 10)
	l.queue(late, 10) // a second message: still one cut
	_ = failed        // an error: trailers only, no bytes queued
	if n := cuts.Load(); n != 3 {
		t.Errorf("%d cuts, want 3: the stalled response, and the two served after the cut", n)
	}
	if held := stats.Held.Load(); held != 0 {
		t.Errorf("held %d after the connection closed, want 0", held)
	}
}
