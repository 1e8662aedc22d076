package service

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
)

// An unencrypted HTTP/2 connection carries gRPC (for grpc-go) or the
// Connect protocol or gRPC-Web (for Go's server), and only its first
// request says which: its HEADERS frame's content-type. A client may wait
// for the server's SETTINGS before it sends any request (grpc-go's does),
// so sniff sends an empty SETTINGS frame of its own first, reads the
// client's frames up to and including the first request's headers, and
// hands the connection on with those bytes to be read again. The server
// that takes it then sends its own SETTINGS; the client acknowledges both,
// and the acknowledgement of sniff's is taken out of what that server
// reads (it would be an acknowledgement of nothing it sent).

const (
	prefaceLen    = len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	frameSettings = 0x4
	frameCont     = 0x9
	flagAck       = 0x1
	flagEndHdrs   = 0x4
	flagPadded    = 0x8
	flagPriority  = 0x20
	// sniffMax bounds what is read before the first request's headers end.
	sniffMax = 64 << 10
	// sniffWait bounds how long a connection may wait before its first
	// request: the server's idle timeout.
	sniffWait = 2 * time.Minute
	// prefaceWait bounds how long a connection may take to send its
	// preface.
	prefaceWait = 10 * time.Second
)

// emptySettings is a SETTINGS frame with no settings: every value the
// protocol's default until the real server sends its own.
var emptySettings = []byte{0, 0, 0, frameSettings, 0, 0, 0, 0, 0}

// sniff reads c's preface and frames up to the end of its first request's
// headers, and reports whether that request is gRPC (not gRPC-Web). The
// returned connection reads everything again, less the acknowledgement of
// sniff's SETTINGS.
func sniff(c net.Conn, r *bufio.Reader, wait time.Duration) (net.Conn, bool, error) {
	// The preface comes at once, as Go's server expects it (within 10s);
	// the first request may come later, within the idle timeout.
	_ = c.SetDeadline(time.Now().Add(min(wait, prefaceWait)))
	defer c.SetDeadline(time.Time{})
	var seen bytes.Buffer
	preface := make([]byte, prefaceLen)
	if _, err := io.ReadFull(r, preface); err != nil {
		return nil, false, err
	}
	_ = c.SetDeadline(time.Now().Add(wait))
	seen.Write(preface)
	if _, err := c.Write(emptySettings); err != nil {
		return nil, false, err
	}
	f := &settingsAckFilter{r: r}
	var block []byte
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(f, hdr[:]); err != nil {
			return nil, false, err
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if seen.Len()+9+length > sniffMax {
			return nil, false, errors.New("no request headers within the first 64 KiB")
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(f, payload); err != nil {
			return nil, false, err
		}
		seen.Write(hdr[:])
		seen.Write(payload)
		typ, flags := hdr[3], hdr[4]
		switch {
		case typ == frameHeaders:
			if flags&flagPadded != 0 && len(payload) > 0 {
				pad := int(payload[0])
				payload = payload[1:]
				if pad > len(payload) {
					return nil, false, errors.New("malformed HEADERS padding")
				}
				payload = payload[:len(payload)-pad]
			}
			if flags&flagPriority != 0 {
				if len(payload) < 5 {
					return nil, false, errors.New("malformed HEADERS priority")
				}
				payload = payload[5:]
			}
			block = append(block, payload...)
		case typ == frameCont && block != nil:
			block = append(block, payload...)
		default:
			continue
		}
		if flags&flagEndHdrs != 0 {
			break
		}
	}
	grpc := false
	dec := hpack.NewDecoder(4096, func(h hpack.HeaderField) {
		if h.Name == "content-type" {
			grpc = strings.HasPrefix(h.Value, "application/grpc") && !strings.HasPrefix(h.Value, "application/grpc-web")
		}
	})
	if _, err := dec.Write(block); err != nil {
		return nil, false, err
	}
	f.r = io.MultiReader(bytes.NewReader(seen.Bytes()), r)
	f.frameN, f.skip = -prefaceLen, 0 // read the preface again, then frames
	return &filtered{Conn: c, f: f}, grpc, nil
}

// settingsAckFilter reads HTTP/2 frames from r and drops the first SETTINGS
// acknowledgement, then passes everything through.
type settingsAckFilter struct {
	r       io.Reader
	hdr     [9]byte
	frameN  int // bytes of hdr read; negative: preface bytes still to pass
	skip    int // payload bytes of the current frame still to pass
	dropped bool
	out     []byte // a frame header read and to be passed on
}

func (f *settingsAckFilter) Read(p []byte) (int, error) {
	for {
		if len(f.out) > 0 {
			n := copy(p, f.out)
			f.out = f.out[n:]
			return n, nil
		}
		if f.dropped {
			return f.r.Read(p)
		}
		if f.frameN < 0 { // the preface, replayed
			n, err := f.r.Read(p[:min(len(p), -f.frameN)])
			f.frameN += n
			return n, err
		}
		if f.skip > 0 {
			n, err := f.r.Read(p[:min(len(p), f.skip)])
			f.skip -= n
			return n, err
		}
		n, err := f.r.Read(f.hdr[f.frameN:])
		f.frameN += n
		if f.frameN < len(f.hdr) {
			if err != nil {
				return 0, err
			}
			continue
		}
		f.frameN = 0
		length := int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		if f.hdr[3] == frameSettings && f.hdr[4]&flagAck != 0 && length == 0 {
			f.dropped = true // sniff's acknowledgement: never passed on
			continue
		}
		f.skip = length
		f.out = append(f.out[:0], f.hdr[:]...)
	}
}

// filtered is a connection read through its filter.
type filtered struct {
	net.Conn
	f *settingsAckFilter
}

func (c *filtered) Read(p []byte) (int, error) { return c.f.Read(p) }
