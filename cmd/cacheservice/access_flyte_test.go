package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/auth"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
)

// flyteRPC is one RPC of Flyte's API with the role it needs.
type flyteRPC struct {
	name string
	need auth.Role
	call func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, n int) error
}

func flyteRPCs() []flyteRPC {
	return []flyteRPC{
		{"Get", auth.RoleRead, func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, _ int) error {
			_, err := c.Get(ctx, flyteGet(id, "victim"))
			return err
		}},
		{"Put", auth.RoleWrite, func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, n int) error {
			_, err := c.Put(ctx, connect.NewRequest(flytePutURI(id, fmt.Sprintf("put-%d", n), "s3://b/p", false)))
			return err
		}},
		{"GetOrExtendReservation", auth.RoleWrite, func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, n int) error {
			_, err := c.GetOrExtendReservation(ctx, flyteReserve(id, fmt.Sprintf("claim-%d", n), "w2", 10*time.Second))
			return err
		}},
		{"ReleaseReservation", auth.RoleWrite, func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, _ int) error {
			_, err := c.ReleaseReservation(ctx, flyteRelease(id, "held", "w1"))
			return err
		}},
		{"Delete", auth.RoleAdmin, func(ctx context.Context, c flytecachev2connect.CacheServiceClient, id *flytecachev2.Identifier, _ int) error {
			_, err := c.Delete(ctx, connect.NewRequest(&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: "victim"}}))
			return err
		}},
	}
}

// flyteClientsWith are Flyte's binary Connect client (as its executor
// builds it) and gRPC, sending token.
func (s *authServer) flyteClientsWith(t *testing.T, token string) map[string]flytecachev2connect.CacheServiceClient {
	t.Helper()
	return map[string]flytecachev2connect.CacheServiceClient{
		"connect+proto/http1.1": flytecachev2connect.NewCacheServiceClient(http1Client(t), s.url, bearer(token)),
		"grpc/h2c":              flytecachev2connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithGRPC(), bearer(token)),
	}
}

// seedFlyte stores the entry "victim" and the reservation "held" (owner w1)
// in id, as admin.
func (s *authServer) seedFlyte(t *testing.T, id *flytecachev2.Identifier) {
	t.Helper()
	admin := s.flyteClientsWith(t, adminToken)["grpc/h2c"]
	if _, err := admin.Put(callCtx(t), connect.NewRequest(flytePutURI(id, "victim", "s3://b/victim", false))); err != nil {
		t.Fatalf("seed entry: %v", err)
	}
	if _, err := admin.GetOrExtendReservation(callCtx(t), flyteReserve(id, "held", "w1", 10*time.Second)); err != nil {
		t.Fatalf("seed reservation: %v", err)
	}
}

// TestEveryFlyteRPCChecksCredentialsAndGrantsBeforeTheDatabase is the
// matrix of TestEveryRPCChecksCredentialsAndGrantsBeforeTheDatabase on
// Flyte's API, whose identifier gives the scope.
func TestEveryFlyteRPCChecksCredentialsAndGrantsBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")))
	id := &flytecachev2.Identifier{Org: "acme", Project: "flyte", Domain: "production"}
	s.seedFlyte(t, id)
	n := 0
	for _, caller := range accessCallers {
		for proto, c := range s.flyteClientsWith(t, caller.token) {
			for _, r := range flyteRPCs() {
				n++
				name := caller.name + "/" + proto + "/" + r.name
				before := s.snapshot(t)
				err := r.call(callCtx(t), c, id, n)
				if caller.role < r.need {
					if code := connect.CodeOf(err); code != caller.refused {
						t.Errorf("%s: code %v (%v), want %v", name, code, err, caller.refused)
					}
					if s.snapshot(t) != before {
						t.Errorf("%s: refused, but the database changed", name)
					}
					continue
				}
				if code := connect.CodeOf(err); err != nil && code != connect.CodeNotFound {
					t.Errorf("%s: allowed caller got %v (%v)", name, code, err)
				}
			}
		}
	}
}

// TestFlyteExecutorIsANetworkPrincipal is the README's example: Flyte's
// executor sends no credentials, so a principal matched by its network
// (here loopback) gets write on its org's development domain: it can cache
// and reserve there, but not delete, and not touch another domain; and a
// token it does not have is refused even from that network.
func TestFlyteExecutorIsANetworkPrincipal(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile(`  - name: flyte-executor
    networks: [127.0.0.0/8]
    grants: [{org: org-a, project: "*", domain: development, role: write}]
`)))
	id := flyteIdentifier(t)
	for proto, c := range s.flyteClientsWith(t, "") {
		if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, proto, "s3://b/"+proto, false))); err != nil {
			t.Fatalf("%s: Put from the executor's network: %v", proto, err)
		}
		if _, err := c.Get(callCtx(t), flyteGet(id, proto)); err != nil {
			t.Errorf("%s: Get from the executor's network: %v", proto, err)
		}
		if _, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, "r-"+proto, "exec", 10*time.Second)); err != nil {
			t.Errorf("%s: reserve from the executor's network: %v", proto, err)
		}
		_, err := c.Delete(callCtx(t), connect.NewRequest(&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: proto}}))
		if code := connect.CodeOf(err); code != connect.CodePermissionDenied {
			t.Errorf("%s: Delete from the executor's network: %v, want permission_denied", proto, err)
		}
		prod := &flytecachev2.Identifier{Org: id.Org, Project: id.Project, Domain: "production"}
		_, err = c.Put(callCtx(t), connect.NewRequest(flytePutURI(prod, proto, "s3://b/x", false)))
		if code := connect.CodeOf(err); code != connect.CodePermissionDenied {
			t.Errorf("%s: Put in production from the executor's network: %v, want permission_denied", proto, err)
		}
	}
	for proto, c := range s.flyteClientsWith(t, "stolen-or-stale-token") {
		_, err := c.Get(callCtx(t), flyteGet(id, proto))
		if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
			t.Errorf("%s: a bad token from the executor's network: %v, want unauthenticated", proto, err)
		}
	}
}
