package service_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/auth"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

// BenchmarkEdgeAuthCost calls Get through the whole edge over loopback HTTP
// with a request that validation refuses (an empty key), so that no call
// reaches the database and the difference between the sub-benchmarks is
// what authentication costs per call, HTTP and interceptors included.
func BenchmarkEdgeAuthCost(b *testing.B) {
	st := openStore(b)
	const token = "bench-token"
	sum := sha256.Sum256([]byte(token))
	file := filepath.Join(b.TempDir(), "auth.yaml")
	if err := os.WriteFile(file, []byte("principals:\n"+
		"  - name: bench\n    token_sha256: "+hex.EncodeToString(sum[:])+"\n    grants: [{org: o, project: \"*\", domain: \"*\", role: admin}]\n"+
		"  - name: net\n    networks: [127.0.0.0/8]\n    grants: [{org: o, project: \"*\", domain: \"*\", role: admin}]\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := auth.New(auth.Config{File: file})
	if err != nil {
		b.Fatal(err)
	}
	m := manager.New(st, manager.Config{}, nil)
	for _, bc := range []struct {
		name  string
		auth  *auth.Authenticator
		token string
	}{
		{"off", nil, ""},
		{"static-token", a, token},
		{"network", a, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(service.NewEdge(m, service.Options{Auth: bc.auth}))
			defer srv.Close()
			client := cachev1connect.NewCacheServiceClient(srv.Client(), srv.URL)
			req := connect.NewRequest(&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}})
			if bc.token != "" {
				req.Header().Set("Authorization", "Bearer "+bc.token)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Get(ctx, req); connect.CodeOf(err) != connect.CodeInvalidArgument {
					b.Fatalf("Get: %v, want invalid_argument from validation", err)
				}
			}
		})
	}
}
