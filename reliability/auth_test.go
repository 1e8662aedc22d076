package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// fuzzAuthEnv runs the fuzz targets (and their seeds under plain go test)
// against a server with authentication on, sending adminToken: inputs
// within its grant must behave as without authentication, the others are
// permission_denied and change nothing. .ci/run runs both modes.
const fuzzAuthEnv = "CACHESERVICE_FUZZ_AUTH"

// adminToken has admin on authedOrg, the org of the seeds and of scope().
const adminToken = "reliability-admin-token"

const authedOrg = "o"

// setupAuthed is setup with authentication on: adminToken may do anything
// in orgs "o" (the fuzz seeds') and "org" (scope()'s), nothing elsewhere.
func setupAuthed(t testing.TB, cfg manager.Config, storeOpts ...func(*store.Config)) *testBundle {
	t.Helper()
	sum := sha256.Sum256([]byte(adminToken))
	file := filepath.Join(t.TempDir(), "auth.yaml")
	text := "principals:\n  - name: admin\n    token_sha256: " + hex.EncodeToString(sum[:]) + "\n" +
		"    grants: [{org: " + authedOrg + `, project: "*", domain: "*", role: admin}, {org: org, project: "*", domain: "*", role: admin}]` + "\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	return setupEdge(t, cfg, a, storeOpts...)
}

// tokenClients are b.clients sending adminToken.
func (b *testBundle) tokenClients() map[string]cachev1connect.CacheServiceClient {
	withToken := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+adminToken)
			return next(ctx, req)
		}
	}))
	return map[string]cachev1connect.CacheServiceClient{
		"connect+json": cachev1connect.NewCacheServiceClient(b.http1, b.baseURL, connect.WithProtoJSON(), withToken),
		"grpc":         cachev1connect.NewCacheServiceClient(b.http2, b.baseURL, connect.WithGRPC(), withToken),
	}
}

// TestHostileRequestsWithATokenAreRefusedAndStoreNothing sends every
// hostile request with a valid admin token: authentication must not open a
// way around validation. Each is invalid_argument naming the field, except
// a hostile org, which no grant covers: permission_denied. Nothing is
// stored, nothing leaks.
func TestHostileRequestsWithATokenAreRefusedAndStoreNothing(t *testing.T) {
	t.Parallel()
	b := setupAuthed(t, manager.DefaultConfig())
	for _, tc := range hostileCases() {
		for proto, c := range b.tokenClients() {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				check := func(err error) {
					t.Helper()
					if strings.HasPrefix(tc.field, "scope.org") {
						if code := connect.CodeOf(err); code != connect.CodePermissionDenied {
							t.Fatalf("code = %v (%v), want permission_denied for a hostile org", code, err)
						}
						assertNoLeak(t, err.Error())
						return
					}
					wantInvalid(t, err, tc.field)
				}
				if tc.put != nil {
					_, err := c.Put(t.Context(), connect.NewRequest(tc.put))
					check(err)
				}
				if tc.claim != nil {
					_, err := c.GetOrExtendReservation(t.Context(), connect.NewRequest(tc.claim))
					check(err)
				}
				b.assertEmpty(t)
			})
		}
	}
	// And the token works: a valid Put is stored.
	if _, err := b.tokenClients()["grpc"].Put(t.Context(), connect.NewRequest(validPut())); err != nil {
		t.Fatalf("valid Put with the token: %v", err)
	}
	b.assertNoServerErrors(t)
}
