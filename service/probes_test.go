package service_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/service"
)

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
	b := setupHealth(t, service.ReadinessConfig{Timeout: 500 * time.Millisecond, CacheFor: 50 * time.Millisecond})
	if code := get(t, b.url+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d with the database up, want 200", code)
	}
	if err := b.pg.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get(t, b.readyz) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still 200 10s after the database stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 {
		if code := get(t, b.url+"/livez"); code != http.StatusOK {
			t.Fatalf("/livez = %d with the database down, want 200", code)
		}
	}
}

// TestHealthListAnswersWhatReflectionAdvertises: reflection lists
// grpc.health.v1.Health/List whenever grpc-go's health descriptor is linked
// in (it is, in cacheservice), and grpchealth v1.5.0 does not serve it; the
// edge does, over gRPC and Connect: the whole server and every mounted
// service, SERVING with the database up.
func TestHealthListAnswersWhatReflectionAdvertises(t *testing.T) {
	t.Parallel()
	b := setupHealthOn(t, service.ReadinessConfig{}, pgtest.NewDatabase(t))
	const list = "/" + grpchealth.HealthV1ServiceName + "/List"
	want := append([]string{""}, serviceNamesForTest(t)...)
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"connect", nil},
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := connect.NewClient[healthpb.HealthListRequest, healthpb.HealthListResponse](h2c(t), b.url+list, tc.opts...)
			res, err := client.CallUnary(t.Context(), connect.NewRequest(&healthpb.HealthListRequest{}))
			if err != nil {
				t.Fatalf("List over %s: %v", tc.name, err)
			}
			got := res.Msg.GetStatuses()
			if len(got) != len(want) {
				t.Errorf("List over %s = %v, want exactly %q", tc.name, got, want)
			}
			for _, name := range want {
				if s := got[name].GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("List over %s: %q is %v, want SERVING", tc.name, name, s)
				}
			}
		})
	}

	stream := grpcreflect.NewClient(h2c(t), b.url, connect.WithGRPC()).NewStream(t.Context())
	t.Cleanup(func() { _, _ = stream.Close() })
	files, err := stream.FileContainingSymbol(grpchealth.HealthV1ServiceName)
	if err != nil {
		t.Fatalf("reflection of %s: %v", grpchealth.HealthV1ServiceName, err)
	}
	var methods []string
	for _, f := range files {
		for _, s := range f.GetService() {
			if f.GetPackage()+"."+s.GetName() == grpchealth.HealthV1ServiceName {
				for _, m := range s.GetMethod() {
					methods = append(methods, m.GetName())
				}
			}
		}
	}
	t.Logf("reflection lists %s methods %v", grpchealth.HealthV1ServiceName, methods)
	if !slices.Contains(methods, "Check") {
		t.Fatalf("reflection lists %s methods %v, without Check", grpchealth.HealthV1ServiceName, methods)
	}
	// Whatever reflection advertises besides Watch (documented as not
	// implemented) must answer.
	for _, m := range methods {
		if m == "Watch" || m == "Check" || m == "List" {
			continue
		}
		t.Errorf("reflection advertises %s/%s, which the edge does not serve", grpchealth.HealthV1ServiceName, m)
	}
}

// serviceNamesForTest returns the full names of the mounted API services.
func serviceNamesForTest(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, p := range service.Procedures() {
		name := strings.Split(strings.TrimPrefix(p, "/"), "/")[0]
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}
