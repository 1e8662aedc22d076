package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// TestGRPCWebServesTheBinaryFormatNotText checks what the README and
// deploy/README.md say of gRPC-Web: the binary format
// (application/grpc-web+proto, as from Connect's and grpc-web's binary
// clients) is served; grpc-web-text (base64, the default of Google's
// grpc-web JavaScript client) is refused with 415, so a proxy or a client
// must use the binary mode.
func TestGRPCWebServesTheBinaryFormatNotText(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithGRPCWeb())
	sc := scope(t)
	if _, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
		Scope: sc, Key: "web", Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/web"}},
	})); err != nil {
		t.Fatalf("Put over gRPC-Web (binary): %v", err)
	}

	msg, err := proto.Marshal(&cachev1.GetRequest{Scope: sc, Key: "web"})
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	frame = append(frame, msg...)
	for _, tt := range []struct {
		contentType string
		body        []byte
		wantStatus  int
	}{
		{"application/grpc-web+proto", frame, http.StatusOK},
		{"application/grpc-web", frame, http.StatusOK},
		{"application/grpc-web-text", []byte(base64.StdEncoding.EncodeToString(frame)), http.StatusUnsupportedMediaType},
		{"application/grpc-web-text+proto", []byte(base64.StdEncoding.EncodeToString(frame)), http.StatusUnsupportedMediaType},
	} {
		req, err := http.NewRequestWithContext(callCtx(t), http.MethodPost, srv.url+cachev1connect.CacheServiceGetProcedure, bytes.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", tt.contentType)
		req.Header.Set("X-Grpc-Web", "1")
		res, err := http1Client(t).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.contentType, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.wantStatus {
			t.Errorf("%s: HTTP %d, want %d", tt.contentType, res.StatusCode, tt.wantStatus)
			continue
		}
		if tt.wantStatus != http.StatusOK {
			continue
		}
		// A data frame with the entry, then a trailer frame with grpc-status 0.
		if len(body) < 5 || body[0] != 0 {
			t.Fatalf("%s: response %q does not start with a data frame", tt.contentType, body)
		}
		n := binary.BigEndian.Uint32(body[1:5])
		var got cachev1.GetResponse
		if err := proto.Unmarshal(body[5:5+n], &got); err != nil || got.GetOutput().GetUri() != "s3://bucket/web" {
			t.Errorf("%s: Get = %v, %v; want uri s3://bucket/web", tt.contentType, &got, err)
		}
		if trailer := string(body[5+n:]); !strings.Contains(trailer, "grpc-status: 0") {
			t.Errorf("%s: trailer frame %q, want grpc-status: 0", tt.contentType, trailer)
		}
	}
}
