package main

import (
	"bytes"
	"errors"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRefuseOverClosesExcessConnectionsAtOnce fills the connection cap with
// idle connections: the next one is closed at once (not queued) and
// counted, and once a connection closes there is room again.
func TestRefuseOverClosesExcessConnectionsAtOnce(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	ln := refuseOver(inner, 2, func() { refused.Add(1) })
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedAtOnce reports whether the server closed c within a second.
	closedAtOnce := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	var held []net.Conn
	for range 2 {
		dial()
		held = append(held, <-accepted)
	}
	defer held[1].Close()
	if excess := dial(); !closedAtOnce(excess) {
		t.Fatal("the connection over the cap was not closed at once")
	}
	if refused.Load() != 1 {
		t.Fatalf("refused = %d, want 1", refused.Load())
	}
	held[0].Close()
	held[0].Close() // a second Close gives nothing back twice
	c := dial()
	select {
	case sc := <-accepted:
		defer sc.Close() // held: a collected conn is closed by its finalizer
	case <-time.After(5 * time.Second):
		t.Fatal("no room after a connection closed")
	}
	if closedAtOnce(c) {
		t.Fatal("the connection after one closed was refused")
	}
	if excess := dial(); !closedAtOnce(excess) {
		t.Fatal("a double Close freed two places")
	}
}

// TestErrorLogCannotFlood writes many connection errors and a panic to the
// http.Server's ErrorLog: a burst is warned, the rest go at debug, the panic
// is an error.
func TestErrorLogCannotFlood(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := log.New(newErrorLog(logger), "", 0)
	for i := range 1000 {
		l.Printf("http2: server connection error from 127.0.0.1:%d: connection reset", i)
	}
	l.Printf("http: panic serving 127.0.0.1:1: boom")
	out := buf.String()
	if n := strings.Count(out, "level=WARN"); n != errorLogBurst {
		t.Errorf("%d WARN lines, want %d", n, errorLogBurst)
	}
	if n := strings.Count(out, "level=DEBUG"); n != 1000-errorLogBurst {
		t.Errorf("%d DEBUG lines, want %d", n, 1000-errorLogBurst)
	}
	if !strings.Contains(out, `level=ERROR msg="http: panic serving`) {
		t.Errorf("the panic is not an error:\n%s", out[max(0, len(out)-500):])
	}
}
