package service_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
)

// probeServer serves the edge over HTTP/1.1 and unencrypted HTTP/2 (so gRPC
// clients reach it) on a loopback port, over the database at url.
func probeServer(t *testing.T, url string) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 4, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	edge := service.NewEdge(manager.New(st, manager.Config{}, nil),
		service.Options{Readiness: service.ReadinessConfig{Timeout: 500 * time.Millisecond, CacheFor: 50 * time.Millisecond}})
	srv := httptest.NewUnstartedServer(edge)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// h2c is a client speaking HTTP/2 without TLS, as gRPC does.
func h2c(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get returns the status of GET url.
func get(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// TestLivezAnswersWhileTheDatabaseIsDown stops the database under the edge:
// /readyz turns 503 while /livez stays 200, so a liveness probe never
// restarts a replica for an outage it cannot cure.
func TestLivezAnswersWhileTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartServer(t)
	srv := probeServer(t, pg.ConnString(embeddedpg.DefaultDatabase))
	if code := get(t, srv.URL+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d with the database up, want 200", code)
	}
	if err := pg.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get(t, srv.URL+"/readyz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still 200 10s after the database stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 {
		if code := get(t, srv.URL+"/livez"); code != http.StatusOK {
			t.Fatalf("/livez = %d with the database down, want 200", code)
		}
	}
}

// TestHealthListIsUnimplementedAndNotAdvertised: grpchealth v1.5.0 serves
// Check and Watch only. List must then answer unimplemented over gRPC and
// Connect (not hang, not internal), and reflection must not offer it.
func TestHealthListIsUnimplementedAndNotAdvertised(t *testing.T) {
	t.Parallel()
	srv := probeServer(t, pgtest.NewDatabase(t))
	const list = "/" + grpchealth.HealthV1ServiceName + "/List"
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"connect", nil},
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The request type does not matter: the call is refused before decoding.
			client := connect.NewClient[emptypb.Empty, emptypb.Empty](h2c(t), srv.URL+list, tc.opts...)
			_, err := client.CallUnary(t.Context(), connect.NewRequest(&emptypb.Empty{}))
			if code := connect.CodeOf(err); code != connect.CodeUnimplemented {
				t.Fatalf("List over %s: %v (code %v), want unimplemented", tc.name, err, code)
			}
			// Control: Check on the same path prefix and client answers.
			check := grpchealth.NewClient(h2c(t), srv.URL, tc.opts...)
			if res, err := check.Check(t.Context(), &grpchealth.CheckRequest{}); err != nil || res.Status != grpchealth.StatusServing {
				t.Fatalf("Check over %s = %v, %v; want SERVING", tc.name, res, err)
			}
		})
	}

	stream := grpcreflect.NewClient(h2c(t), srv.URL, connect.WithGRPC()).NewStream(t.Context())
	t.Cleanup(func() { _, _ = stream.Close() })
	files, err := stream.FileContainingSymbol(grpchealth.HealthV1ServiceName)
	if err != nil {
		t.Fatalf("reflection of %s: %v", grpchealth.HealthV1ServiceName, err)
	}
	var methods []string
	for _, f := range files {
		for _, s := range f.GetService() {
			if f.GetPackage()+"."+s.GetName() != grpchealth.HealthV1ServiceName {
				continue
			}
			for _, m := range s.GetMethod() {
				methods = append(methods, m.GetName())
			}
		}
	}
	if len(methods) == 0 {
		t.Fatalf("reflection returned no methods of %s", grpchealth.HealthV1ServiceName)
	}
	for _, m := range methods {
		if m == "List" {
			t.Errorf("reflection advertises %s/List, which the server does not implement (methods %v)", grpchealth.HealthV1ServiceName, methods)
		}
	}
	t.Logf("reflection lists %s methods %v", grpchealth.HealthV1ServiceName, methods)
}
