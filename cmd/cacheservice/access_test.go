package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cacheservice/cacheservice/auth"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/service"
)

// Static tokens of the principals in testAuthFile; the file holds only
// their SHA-256.
const (
	readToken  = "read-token-2f1c6a"
	writeToken = "write-token-9b7e44"
	adminToken = "admin-token-51d0c8"
	otherToken = "other-org-token-a3e912"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// testAuthFile grants read, write and admin on org acme to one token each,
// admin on org other to a fourth, and appends extra principals.
func testAuthFile(extra string) string {
	return fmt.Sprintf(`principals:
  - name: reader
    token_sha256: %s
    grants: [{org: acme, project: "*", domain: "*", role: read}]
  - name: writer
    token_sha256: %s
    grants: [{org: acme, project: "*", domain: "*", role: write}]
  - name: admin
    token_sha256: %s
    grants: [{org: acme, project: "*", domain: "*", role: admin}]
  - name: other-org-admin
    token_sha256: %s
    grants: [{org: other, project: "*", domain: "*", role: admin}]
`, sha256Hex(readToken), sha256Hex(writeToken), sha256Hex(adminToken), sha256Hex(otherToken)) + extra
}

// writeAuthFile writes text to a fresh auth file and returns its path.
func writeAuthFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// bearer makes a client send token as "Authorization: Bearer"; an empty
// token sends nothing.
func bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}))
}

// authServer is a server with authentication on, and a pool of the test's
// own to look at its database.
type authServer struct {
	*testServer
	db *pgxpool.Pool
}

// startAuthServer runs the server over a fresh database with args, which
// name the auth file.
func startAuthServer(t *testing.T, args ...string) *authServer {
	t.Helper()
	url := pgtest.NewDatabase(t)
	srv := startServerWith(t, append([]string{"--database-url", url}, args...)...)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &authServer{testServer: srv, db: pool}
}

// snapshot digests every row of both tables, so that any write shows.
func (s *authServer) snapshot(t *testing.T) string {
	t.Helper()
	var digest string
	err := s.db.QueryRow(callCtx(t), `SELECT
		coalesce((SELECT md5(string_agg(e::text, '|' ORDER BY e::text)) FROM cache_entries e), 'none') || '/' ||
		coalesce((SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM reservations r), 'none')`).Scan(&digest)
	if err != nil {
		t.Fatalf("snapshot the database: %v", err)
	}
	return digest
}

// clientsWith returns a Connect (JSON, HTTP/1.1) and a gRPC (h2c) client
// sending token.
func (s *authServer) clientsWith(t *testing.T, token string) []protocol {
	t.Helper()
	return []protocol{
		{"connect+json/http1.1", cachev1connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithProtoJSON(), bearer(token))},
		{"grpc/h2c", cachev1connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithGRPC(), bearer(token))},
	}
}

// accessCallers are the callers of the access matrices: each with the role
// it has on org acme, and the code it gets for an RPC needing more.
var accessCallers = []struct {
	name, token string
	role        auth.Role
	refused     connect.Code
}{
	{"no credentials", "", auth.RoleNone, connect.CodeUnauthenticated},
	{"wrong token", "not-a-token-anyone-has", auth.RoleNone, connect.CodeUnauthenticated},
	{"other org", otherToken, auth.RoleNone, connect.CodePermissionDenied},
	{"read", readToken, auth.RoleRead, connect.CodePermissionDenied},
	{"write", writeToken, auth.RoleWrite, connect.CodePermissionDenied},
	{"admin", adminToken, auth.RoleAdmin, connect.CodePermissionDenied},
}

func acme(project string) *cachev1.Scope {
	return &cachev1.Scope{Org: "acme", Project: project, Domain: "production"}
}

func uriOutput(uri string) *cachev1.CachedOutput {
	return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: uri}}
}

// TestEveryRPCChecksCredentialsAndGrantsBeforeTheDatabase calls every RPC
// as every kind of caller over Connect and gRPC: without credentials or
// with an unknown token it is unauthenticated, without a grant of the
// RPC's role on the scope (a lower role, or a grant on another org) it is
// permission_denied, and a refused call changes no row. Allowed calls reach
// the handler.
func TestEveryRPCChecksCredentialsAndGrantsBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")))
	sc := acme("matrix")
	admin := s.clientsWith(t, adminToken)[0].client
	if _, err := admin.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: "victim", Output: uriOutput("s3://b/victim")})); err != nil {
		t.Fatalf("seed entry: %v", err)
	}
	if _, err := admin.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "held", OwnerId: "w1"})); err != nil {
		t.Fatalf("seed reservation: %v", err)
	}

	type rpc struct {
		name string
		need auth.Role
		call func(ctx context.Context, c cachev1connect.CacheServiceClient, n int) error
	}
	rpcs := []rpc{
		{"Get", auth.RoleRead, func(ctx context.Context, c cachev1connect.CacheServiceClient, _ int) error {
			_, err := c.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: "victim"}))
			return err
		}},
		{"Put", auth.RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, n int) error {
			_, err := c.Put(ctx, connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: fmt.Sprintf("put-%d", n), Output: uriOutput("s3://b/p")}))
			return err
		}},
		{"GetOrExtendReservation", auth.RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, n int) error {
			_, err := c.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: fmt.Sprintf("claim-%d", n), OwnerId: "w2"}))
			return err
		}},
		{"ReleaseReservation", auth.RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, _ int) error {
			_, err := c.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{Scope: sc, Key: "held", OwnerId: "w1"}))
			return err
		}},
		{"Delete", auth.RoleAdmin, func(ctx context.Context, c cachev1connect.CacheServiceClient, _ int) error {
			_, err := c.Delete(ctx, connect.NewRequest(&cachev1.DeleteRequest{Scope: sc, Key: "victim"}))
			return err
		}},
	}
	// Every procedure of the service is in the matrix.
	for _, procedure := range service.Procedures() {
		name, ok := strings.CutPrefix(procedure, "/"+cachev1connect.CacheServiceName+"/")
		if ok && !slices.ContainsFunc(rpcs, func(r rpc) bool { return r.name == name }) {
			t.Errorf("%s is served but not in this test's matrix", procedure)
		}
	}
	n := 0
	for _, caller := range accessCallers {
		for _, p := range s.clientsWith(t, caller.token) {
			for _, r := range rpcs {
				n++
				name := caller.name + "/" + p.name + "/" + r.name
				before := s.snapshot(t)
				err := r.call(callCtx(t), p.client, n)
				if caller.role < r.need {
					if code := connect.CodeOf(err); code != caller.refused {
						t.Errorf("%s: code %v (%v), want %v", name, code, err, caller.refused)
					}
					if after := s.snapshot(t); after != before {
						t.Errorf("%s: refused, but the database changed", name)
					}
					if err != nil && caller.token != "" && strings.Contains(err.Error(), caller.token) {
						t.Errorf("%s: the error echoes the token: %v", name, err)
					}
					continue
				}
				// Allowed: the handler answered (a repeated Delete or
				// Release finds nothing, which is the handler's answer).
				switch code := connect.CodeOf(err); {
				case err == nil, code == connect.CodeNotFound:
				default:
					t.Errorf("%s: allowed caller got %v (%v)", name, code, err)
				}
			}
		}
	}
	if !regexp.MustCompile(`msg=audit component=auth principal=admin procedure=/cacheservice.v1.CacheService/Delete org=acme project=matrix domain=production allowed=true code=ok`).MatchString(s.logs.String()) {
		t.Errorf("no audit line for the admin's Delete in the log:\n%s", s.logs)
	}
	if !strings.Contains(s.logs.String(), `msg=audit component=auth principal=writer procedure=/cacheservice.v1.CacheService/Delete org=acme project=matrix domain=production allowed=false code=permission_denied`) {
		t.Errorf("no audit line for the writer's refused Delete")
	}
}

// TestAuthenticationComesBeforeValidationAndProbesStayOpen checks what a
// caller without credentials sees: an invalid request is unauthenticated,
// not invalid_argument (it learns nothing about the fields); health,
// reflection and /readyz answer; /metrics is not on the main port but on
// --metrics-addr, where the refusals are counted.
func TestAuthenticationComesBeforeValidationAndProbesStayOpen(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")), "--metrics-addr", "127.0.0.1:0", "--pprof")
	for _, p := range s.clientsWith(t, "") {
		_, err := p.client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{}))
		if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
			t.Errorf("%s: empty Put without credentials: %v, want unauthenticated", p.name, err)
		}
	}
	for _, p := range s.clientsWith(t, writeToken) {
		_, err := p.client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: acme("v"), Key: "k"}))
		wantCode(t, err, connect.CodeInvalidArgument) // authorized: validation then speaks
	}
	if code := getStatus(t, s.url+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d, want 200 without credentials", code)
	}
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		if code := getStatus(t, s.url+path); code != http.StatusNotFound {
			t.Errorf("%s on the main port with auth on: %d, want 404", path, code)
		}
	}
	m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no metrics listening line:\n%s", s.logs)
	}
	res, err := http1Client(t).Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`cacheservice_auth_failures_total{reason="no_credentials"} 2`,
		`cacheservice_auth_principals 4`,
		`cacheservice_auth_file_reloads_total{result="ok"} 1`,
		// Metrics run outside authentication: refused calls are counted.
		`cacheservice_rpc_requests_total{code="unauthenticated",procedure="/cacheservice.v1.CacheService/Put"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics on --metrics-addr lacks %q", want)
		}
	}
}

// TestMetricsAreNotServedOnTheMainPortWithAuthentication checks the choice
// made when --metrics-addr is empty: with auth on, /metrics is not served at
// all (beside an API that asks for credentials it would answer anyone), and
// a line says so.
func TestMetricsAreNotServedOnTheMainPortWithAuthentication(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")))
	if code := getStatus(t, s.url+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics: %d, want 404", code)
	}
	if !strings.Contains(s.logs.String(), "served only on --metrics-addr") {
		t.Errorf("no line says why metrics are not served:\n%s", s.logs)
	}
}
