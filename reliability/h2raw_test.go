package reliability

import (
	"bytes"
	encbin "encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// rawH2 is a hand-driven unencrypted HTTP/2 connection: the test decides
// every frame, so it can behave as no well-mannered client would (a zero
// flow-control window, streams reset as soon as they are sent).
type rawH2 struct {
	conn   net.Conn
	mu     sync.Mutex // serialises frame writes
	framer *http2.Framer
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
	next   uint32 // the next client stream id
	closed chan struct{}
	reads  chan error // the reader's end: nil on EOF or the server's close
}

// dialRawH2 opens a connection to addr and sends the preface with the given
// initial stream window. With window 0 and no WINDOW_UPDATE ever sent, the
// server can send headers but not one byte of a response body. Every frame
// the server sends is read and dropped, so the TCP connection never blocks;
// only HTTP/2 flow control holds the server back.
func dialRawH2(addr string, window uint32) (*rawH2, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawH2{conn: conn, next: 1, closed: make(chan struct{}), reads: make(chan error, 1)}
	c.framer = http2.NewFramer(conn, conn)
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.framer.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window}); err != nil {
		conn.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// readLoop drains the server's frames, acknowledging its settings and pings
// (as any client must) but never opening a window.
func (c *rawH2) readLoop() {
	defer close(c.closed)
	for {
		f, err := c.framer.ReadFrame()
		if err != nil {
			c.reads <- err
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.mu.Lock()
				_ = c.framer.WriteSettingsAck()
				c.mu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.mu.Lock()
				_ = c.framer.WritePing(true, f.Data)
				c.mu.Unlock()
			}
		}
	}
}

// grpcCall opens a stream calling procedure with msg over gRPC and returns
// its id.
func (c *rawH2) grpcCall(authority, procedure string, msg proto.Message) (uint32, error) {
	body, err := proto.Marshal(msg)
	if err != nil {
		return 0, err
	}
	frame := make([]byte, 5, 5+len(body))
	encbin.BigEndian.PutUint32(frame[1:], uint32(len(body)))
	frame = append(frame, body...)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.hbuf.Reset()
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", authority}, {":path", procedure},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	id := c.next
	c.next += 2
	if err := c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return 0, fmt.Errorf("headers of stream %d: %w", id, err)
	}
	if err := c.framer.WriteData(id, true, frame); err != nil {
		return 0, fmt.Errorf("data of stream %d: %w", id, err)
	}
	return id, nil
}

// reset cancels stream id, as a client that gave up does.
func (c *rawH2) reset(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.framer.WriteRSTStream(id, http2.ErrCodeCancel)
}

// isClosed reports whether the server has closed the connection.
func (c *rawH2) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *rawH2) Close() error { return c.conn.Close() }
