package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

func TestHealthCheckReportsServing(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	grpcClient := grpchealth.NewClient(h2cClient(t), srv.url, connect.WithGRPC())
	for _, service := range []string{"", cachev1connect.CacheServiceName} {
		t.Run("grpc/"+service, func(t *testing.T) {
			res, err := grpcClient.Check(callCtx(t), &grpchealth.CheckRequest{Service: service})
			if err != nil || res.Status != grpchealth.StatusServing {
				t.Fatalf("Check(%q) = %v, %v; want serving", service, res, err)
			}
		})
		t.Run("connect+json/"+service, func(t *testing.T) {
			status, body := httpDo(t, http.MethodPost, srv.url+"/grpc.health.v1.Health/Check", "application/json",
				`{"service":"`+service+`"}`)
			// connectrpc.com/grpchealth's copy of health.proto prefixes the
			// enum's JSON names; the binary form is gRPC's.
			if status != http.StatusOK || body != `{"status":"SERVING_STATUS_SERVING"}` {
				t.Fatalf("Check(%q) = %d %s, want 200 SERVING", service, status, body)
			}
		})
	}
	_, err := grpcClient.Check(callCtx(t), &grpchealth.CheckRequest{Service: "no.such.Service"})
	wantCode(t, err, connect.CodeNotFound)
}

func TestReflectionListsServices(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	want := []string{cachev1connect.CacheServiceName, grpchealth.HealthV1ServiceName}

	t.Run("client", func(t *testing.T) {
		stream := grpcreflect.NewClient(h2cClient(t), srv.url, connect.WithGRPC()).NewStream(callCtx(t))
		t.Cleanup(func() { _, _ = stream.Close() })
		names, err := stream.ListServices()
		if err != nil {
			t.Fatalf("ListServices: %v", err)
		}
		for _, name := range want {
			if !slices.Contains(names, protoreflect.FullName(name)) {
				t.Errorf("ListServices = %v, want %s among them", names, name)
			}
		}
		// buf curl needs the whole file and its imports, protovalidate's included.
		files, err := stream.FileContainingSymbol(cachev1connect.CacheServiceName)
		if err != nil {
			t.Fatalf("FileContainingSymbol: %v", err)
		}
		var paths []string
		for _, f := range files {
			paths = append(paths, f.GetName())
		}
		for _, p := range []string{"cacheservice/v1/cache.proto", "buf/validate/validate.proto"} {
			if !slices.Contains(paths, p) {
				t.Errorf("FileContainingSymbol returned %v, want %s among them", paths, p)
			}
		}
	})

	// Older tools speak v1alpha only; the wire format is the same.
	for _, version := range []string{"v1", "v1alpha"} {
		t.Run("raw grpc "+version, func(t *testing.T) {
			// ServerReflectionRequest{list_services: ""}: field 7, length 0.
			body := grpcFrame([]byte{7<<3 | 2, 0})
			req, err := http.NewRequestWithContext(callCtx(t), http.MethodPost,
				srv.url+"/grpc.reflection."+version+".ServerReflection/ServerReflectionInfo", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			res, err := h2cClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if status := res.Trailer.Get("Grpc-Status"); status != "0" {
				t.Fatalf("grpc-status = %q (%s), want 0", status, res.Trailer.Get("Grpc-Message"))
			}
			for _, name := range want {
				if !bytes.Contains(got, []byte(name)) {
					t.Errorf("response %q does not list %s", got, name)
				}
			}
		})
	}
}

// grpcFrame wraps an encoded message in gRPC's length-prefixed envelope.
func grpcFrame(msg []byte) []byte {
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	return append(frame, msg...)
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example.com"
	withCORS := startServer(t, "--cors-allowed-origins", allowed+", http://localhost:3000")
	withoutCORS := startServer(t)
	put := cachev1connect.CacheServicePutProcedure
	tests := []struct {
		name       string
		srv        *testServer
		method     string
		origin     string
		reqHeaders string            // Access-Control-Request-Headers of a preflight: lowercase and sorted, as browsers send it
		want       map[string]string // response headers that must contain these values
		wantNone   []string          // response headers that must be absent
	}{
		{
			name: "connect preflight from an allowed origin", srv: withCORS, method: http.MethodOptions, origin: allowed,
			reqHeaders: "connect-protocol-version,connect-timeout-ms,content-type",
			want: map[string]string{
				"Access-Control-Allow-Origin":  allowed,
				"Access-Control-Allow-Methods": "POST",
				"Access-Control-Allow-Headers": "connect-protocol-version",
			},
		},
		{
			name: "grpc-web preflight from an allowed origin", srv: withCORS, method: http.MethodOptions, origin: "http://localhost:3000",
			reqHeaders: "content-type,grpc-timeout,x-grpc-web,x-user-agent",
			want: map[string]string{
				"Access-Control-Allow-Origin":  "http://localhost:3000",
				"Access-Control-Allow-Headers": "x-grpc-web",
			},
		},
		{
			name: "actual request exposes the error headers", srv: withCORS, method: http.MethodPost, origin: allowed,
			want: map[string]string{
				"Access-Control-Allow-Origin":   allowed,
				"Access-Control-Expose-Headers": "Grpc-Status",
			},
		},
		{
			name: "preflight from an unknown origin", srv: withCORS, method: http.MethodOptions, origin: "https://evil.example.com",
			reqHeaders: "content-type", wantNone: []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Headers"},
		},
		{
			name: "preflight when no origin is configured", srv: withoutCORS, method: http.MethodOptions, origin: allowed,
			reqHeaders: "content-type", wantNone: []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Headers"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(callCtx(t), tt.method, tt.srv.url+put, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", tt.origin)
			if tt.method == http.MethodOptions {
				req.Header.Set("Access-Control-Request-Method", http.MethodPost)
				req.Header.Set("Access-Control-Request-Headers", tt.reqHeaders)
			} else {
				req.Header.Set("Content-Type", "application/json")
			}
			res, err := http1Client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			for name, value := range tt.want {
				if got := res.Header.Get(name); !strings.Contains(strings.ToLower(got), strings.ToLower(value)) {
					t.Errorf("%s = %q, want it to contain %q", name, got, value)
				}
			}
			for _, name := range tt.wantNone {
				if got := res.Header.Get(name); got != "" {
					t.Errorf("%s = %q, want none", name, got)
				}
			}
		})
	}
}
