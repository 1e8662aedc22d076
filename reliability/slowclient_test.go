package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// serverHeaderTimeout and serverReadTimeout are cmd/cacheservice's
// http.Server ReadHeaderTimeout and ReadTimeout.
const (
	serverHeaderTimeout = 5 * time.Second
	serverReadTimeout   = 30 * time.Second
)

// trickle opens a connection to addr, sends head at once, then one byte of
// tail every interval, and returns how long the server kept the connection
// open (bounded by limit; limit itself means it never closed).
func trickle(addr, head, tail string, interval, limit time.Duration) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		// Whatever the server answers (408 or nothing), it then closes.
		_, _ = io.Copy(io.Discard, conn)
	}()
	if _, err := io.WriteString(conn, head); err != nil {
		return 0, err
	}
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start), nil
		case <-time.After(interval):
		}
		if time.Since(start) > limit {
			return limit, nil
		}
		if _, err := conn.Write([]byte{tail[i%len(tail)]}); err != nil {
			<-closed
			return time.Since(start), nil
		}
	}
}

// TestSlowLorisClientsAreCutOffAndOthersServed opens many connections that
// send their headers a byte at a time: the server closes each after its
// header timeout, and serves a normal client meanwhile. Under
// CACHESERVICE_LONG, clients that trickle the body are cut off by the read
// timeout as well.
func TestSlowLorisClientsAreCutOffAndOthersServed(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "server", "--database-url", pgtest.NewDatabase(t))
	type loris struct {
		name      string
		head      string
		tail      string
		timeout   time.Duration
		longsOnly bool
	}
	const path = "/cacheservice.v1.CacheService/Get"
	kinds := []loris{
		{name: "headers", head: "POST " + path + " HTTP/1.1\r\nHost: x\r\n", tail: "X-Slow: aaaaaaaaaaaaaaaaaaaa", timeout: serverHeaderTimeout},
		{name: "body", head: "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
			tail: `{"scope":{"org":"o"}}`, timeout: serverReadTimeout, longsOnly: true},
	}
	for _, k := range kinds {
		if k.longsOnly && !long() {
			t.Logf("%s loris takes %v: runs under %s=1", k.name, k.timeout, longEnv)
			continue
		}
		const conns = 32
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for range conns {
			wg.Go(func() {
				held, err := trickle(srv.addr, k.head, k.tail, 200*time.Millisecond, k.timeout+5*time.Second)
				switch {
				case err != nil:
					errs <- err
				case held < k.timeout-time.Second || held > k.timeout+3*time.Second:
					errs <- fmt.Errorf("%s loris held its connection %v, want about %v", k.name, held, k.timeout)
				}
			})
		}
		// While they trickle, a normal client is served promptly.
		for range 5 {
			time.Sleep(500 * time.Millisecond)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			_, err := srv.connectClient().Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "k"}))
			cancel()
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("normal client during the %s loris: %v, want not_found within 2s", k.name, err)
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	if !srv.alive() {
		t.Fatalf("server died")
	}
}

// hugeBody is a Put of key "huge" whose inline output claims size bytes and
// streams them without holding them in memory.
func hugeBody(t *testing.T, size int) (io.Reader, int64) {
	t.Helper()
	prefix, err := proto.Marshal(&cachev1.PutRequest{Scope: scope(), Key: "huge"})
	if err != nil {
		t.Fatal(err)
	}
	// field 3 (output) holding field 2 (inline) of size bytes.
	inner := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.BytesType), uint64(size))
	prefix = protowire.AppendTag(prefix, 3, protowire.BytesType)
	prefix = protowire.AppendVarint(prefix, uint64(len(inner)+size))
	prefix = append(prefix, inner...)
	return io.MultiReader(bytes.NewReader(prefix), io.LimitReader(zeros{}, int64(size))), int64(len(prefix) + size)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHundredMegabyteBodiesAreRefusedCheaply streams 100 MB Put bodies,
// with and without a Content-Length: each is resource_exhausted (or the
// connection is cut once the server has answered), promptly, without the
// server's memory growing by the body's size, and nothing is stored.
func TestHundredMegabyteBodiesAreRefusedCheaply(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "server", "--database-url", pgtest.NewDatabase(t))
	const size = 100 << 20
	before := srv.rssKiB(t)
	for _, sized := range []bool{true, false} {
		name := map[bool]string{true: "content-length", false: "chunked"}[sized]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			body, length := hugeBody(t, size)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.baseURL+"/cacheservice.v1.CacheService/Put", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/proto")
			if sized {
				req.ContentLength = length
			}
			start := time.Now()
			resp, err := http1Client.Do(req)
			took := time.Since(start)
			if err != nil {
				// The server answered and closed while we were still sending.
				var opErr *net.OpError
				if !errors.As(err, &opErr) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("POST 100 MB: %v", err)
				}
				t.Logf("connection cut after %v: %v", took, err)
			} else {
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				r := decodeRaw(t, resp.StatusCode, data)
				if r.code != connect.CodeResourceExhausted {
					t.Fatalf("status %d code %v (%q), want resource_exhausted", r.status, r.code, r.msg)
				}
				assertNoLeak(t, r.msg)
				t.Logf("refused after %v: %v", took, r.msg)
			}
			if took > 30*time.Second {
				t.Fatalf("refusing the body took %v", took)
			}
		})
	}
	// A body held in memory would add 100 MiB. What may legitimately be
	// added is the request buffers and up to --gc-headroom (32 MiB) of
	// garbage not yet collected.
	if after := srv.rssKiB(t); after-before > 64<<10 {
		t.Fatalf("server RSS grew from %d KiB to %d KiB on refused bodies", before, after)
	}
	_, err := srv.connectClient().Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: scope(), Key: "huge"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("after the refused bodies, Get huge: %v, want not_found", err)
	}
}
