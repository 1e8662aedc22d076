package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/syncbuf"
)

// Tokens of the principals in baseFile. Only their hashes are in the file.
const (
	readToken  = "read-token-0123456789"
	writeToken = "write-token-0123456789"
	adminToken = "admin-token-0123456789"
	otherToken = "other-org-token-0123456789"
)

func sha(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// baseFile grants on org acme; the test scope is acme/ml/production.
func baseFile() string {
	return `principals:
  - name: reader
    token_sha256: ` + sha(readToken) + `
    grants: [{org: acme, project: ml, domain: "*", role: read}]
  - name: writer
    token_sha256: ` + sha(writeToken) + `
    grants: [{org: acme, project: "*", domain: production, role: write}]
  - name: admin
    token_sha256: ` + sha(adminToken) + `
    grants: [{org: acme, project: "*", domain: "*", role: admin}]
  - name: other-org
    token_sha256: ` + sha(otherToken) + `
    grants: [{org: globex, project: "*", domain: "*", role: admin}]
`
}

var testScope = &cachev1.Scope{Org: "acme", Project: "ml", Domain: "production"}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newAuthenticator writes content as the auth file and builds an
// Authenticator logging as JSON into the returned buffer.
func newAuthenticator(t testing.TB, content string, edit func(*Config)) (*Authenticator, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cfg := Config{
		File:   writeFile(t, filepath.Join(t.TempDir(), "auth.yaml"), content),
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, logs
}

// recorder is the in-test CacheService: it answers every call with success
// and remembers the keys it was called with, so a test can tell that a
// refused call never reached it.
type recorder struct {
	mu   sync.Mutex
	seen map[string]*Principal
}

func (r *recorder) record(ctx context.Context, key string) {
	p, _ := PrincipalFrom(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]*Principal{}
	}
	r.seen[key] = p
}

// reached reports whether a call with key got to the handler, and as whom.
func (r *recorder) reached(key string) (*Principal, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.seen[key]
	return p, ok
}

var _ cachev1connect.CacheServiceHandler = (*recorder)(nil)

func (r *recorder) Get(ctx context.Context, req *connect.Request[cachev1.GetRequest]) (*connect.Response[cachev1.GetResponse], error) {
	r.record(ctx, req.Msg.GetKey())
	return connect.NewResponse(&cachev1.GetResponse{Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://x"}}}), nil
}

func (r *recorder) Put(ctx context.Context, req *connect.Request[cachev1.PutRequest]) (*connect.Response[cachev1.PutResponse], error) {
	r.record(ctx, req.Msg.GetKey())
	return connect.NewResponse(&cachev1.PutResponse{}), nil
}

func (r *recorder) Delete(ctx context.Context, req *connect.Request[cachev1.DeleteRequest]) (*connect.Response[cachev1.DeleteResponse], error) {
	r.record(ctx, req.Msg.GetKey())
	return connect.NewResponse(&cachev1.DeleteResponse{}), nil
}

func (r *recorder) GetOrExtendReservation(ctx context.Context, req *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error) {
	r.record(ctx, req.Msg.GetKey())
	return connect.NewResponse(&cachev1.GetOrExtendReservationResponse{}), nil
}

func (r *recorder) ReleaseReservation(ctx context.Context, req *connect.Request[cachev1.ReleaseReservationRequest]) (*connect.Response[cachev1.ReleaseReservationResponse], error) {
	r.record(ctx, req.Msg.GetKey())
	return connect.NewResponse(&cachev1.ReleaseReservationResponse{}), nil
}

// startServer serves the recorder behind the authenticator on a loopback
// port: plain HTTP/1.1 and HTTP/2 when serverTLS is nil, else TLS with ALPN.
func startServer(t *testing.T, a *Authenticator, serverTLS *tls.Config) (string, *recorder) {
	t.Helper()
	rec := &recorder{}
	mux := http.NewServeMux()
	path, h := cachev1connect.NewCacheServiceHandler(rec, connect.WithInterceptors(a.Interceptor()))
	mux.Handle(path, Middleware(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if serverTLS != nil {
		srv.TLS = serverTLS
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.URL, rec
}

// clientKinds are the protocols every matrix runs over.
var clientKinds = []struct {
	name string
	grpc bool
}{{"connect", false}, {"grpc", true}}

// httpClient dials from localIP (nil: the kernel's choice), so tests can be
// different network peers on loopback. gRPC needs HTTP/2: without TLS that
// is prior knowledge.
func httpClient(t *testing.T, grpc bool, localIP net.IP, clientTLS *tls.Config) *http.Client {
	t.Helper()
	dialer := &net.Dialer{}
	if localIP != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: localIP}
	}
	tr := &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}
	if clientTLS == nil {
		tr.Protocols = new(http.Protocols)
		if grpc {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newClient(t *testing.T, url string, grpc bool, localIP net.IP, clientTLS *tls.Config) cachev1connect.CacheServiceClient {
	t.Helper()
	var opts []connect.ClientOption
	if grpc {
		opts = append(opts, connect.WithGRPC())
	}
	return cachev1connect.NewCacheServiceClient(httpClient(t, grpc, localIP, clientTLS), url, opts...)
}

// rpc is one procedure of our API, callable with any key and headers.
type rpc struct {
	procedure string
	role      Role
	call      func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error
}

func withHeader[T any](msg *T, h http.Header) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for k, v := range h {
		req.Header()[k] = v
	}
	return req
}

var rpcs = []rpc{
	{cachev1connect.CacheServiceGetProcedure, RoleRead, func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error {
		_, err := c.Get(ctx, withHeader(&cachev1.GetRequest{Scope: testScope, Key: key}, h))
		return err
	}},
	{cachev1connect.CacheServicePutProcedure, RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error {
		_, err := c.Put(ctx, withHeader(&cachev1.PutRequest{Scope: testScope, Key: key, Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://x"}}}, h))
		return err
	}},
	{cachev1connect.CacheServiceGetOrExtendReservationProcedure, RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error {
		_, err := c.GetOrExtendReservation(ctx, withHeader(&cachev1.GetOrExtendReservationRequest{Scope: testScope, Key: key, OwnerId: "w"}, h))
		return err
	}},
	{cachev1connect.CacheServiceReleaseReservationProcedure, RoleWrite, func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error {
		_, err := c.ReleaseReservation(ctx, withHeader(&cachev1.ReleaseReservationRequest{Scope: testScope, Key: key, OwnerId: "w"}, h))
		return err
	}},
	{cachev1connect.CacheServiceDeleteProcedure, RoleAdmin, func(ctx context.Context, c cachev1connect.CacheServiceClient, key string, h http.Header) error {
		_, err := c.Delete(ctx, withHeader(&cachev1.DeleteRequest{Scope: testScope, Key: key}, h))
		return err
	}},
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": []string{"Bearer " + token}}
}

// codeOf is connect.CodeOf with 0 for success, so tables can say "ok".
func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

// expectCall makes one call and checks its code, that the handler ran
// exactly when the call succeeded and saw the principal who, and that an
// error does not echo the bearer token.
func expectCall(t *testing.T, rec *recorder, client cachev1connect.CacheServiceClient, r rpc, key string, h http.Header, want connect.Code, who string) {
	t.Helper()
	err := r.call(t.Context(), client, key, h)
	if got := codeOf(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", r.procedure, got, err, want)
	}
	if tok, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer "); ok && err != nil && tok != "" && strings.Contains(err.Error(), tok) {
		t.Fatalf("error echoes the credential: %v", err)
	}
	p, reached := rec.reached(key)
	if reached != (want == 0) {
		t.Fatalf("handler reached = %v, want %v", reached, want == 0)
	}
	if reached && (p == nil || p.Name != who) {
		t.Fatalf("handler saw principal %v, want %s", p, who)
	}
}

func TestEveryProcedureByCredential(t *testing.T) {
	t.Parallel()
	a, logs := newAuthenticator(t, baseFile(), nil)
	url, rec := startServer(t, a, nil)

	creds := []struct {
		name  string
		h     http.Header
		role  Role   // what the credential may do on testScope
		who   string // the principal the handler sees
		authn bool   // whether the credential authenticates at all
	}{
		{name: "none", h: http.Header{}},
		{name: "wrong-token", h: bearer("not-a-token")},
		{name: "malformed-header", h: http.Header{"Authorization": []string{"Basic dXNlcjpwYXNz"}}},
		{name: "read", h: bearer(readToken), role: RoleRead, who: "reader", authn: true},
		{name: "write", h: bearer(writeToken), role: RoleWrite, who: "writer", authn: true},
		{name: "admin", h: bearer(adminToken), role: RoleAdmin, who: "admin", authn: true},
		{name: "other-org", h: bearer(otherToken), role: RoleNone, who: "other-org", authn: true},
	}
	for _, kind := range clientKinds {
		client := newClient(t, url, kind.grpc, nil, nil)
		for _, cred := range creds {
			for _, r := range rpcs {
				name := kind.name + "/" + cred.name + "/" + r.procedure
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					want := connect.Code(0)
					switch {
					case !cred.authn:
						want = connect.CodeUnauthenticated
					case cred.role < r.role:
						want = connect.CodePermissionDenied
					}
					expectCall(t, rec, client, r, name, cred.h, want, cred.who)
				})
			}
		}
	}
	t.Cleanup(func() {
		// Every Delete that authenticated left an audit line, refused or not.
		for _, who := range []string{"reader", "writer", "admin", "other-org"} {
			if !strings.Contains(logs.String(), `"msg":"audit","principal":"`+who+`","procedure":"/cacheservice.v1.CacheService/Delete"`) {
				t.Errorf("no audit line for %s's Delete", who)
			}
		}
	})
}

func TestAuditLineNamesPrincipalScopeAndOutcome(t *testing.T) {
	t.Parallel()
	a, logs := newAuthenticator(t, baseFile(), nil)
	url, _ := startServer(t, a, nil)
	c := newClient(t, url, false, nil, nil)
	if _, err := c.Delete(t.Context(), withHeader(&cachev1.DeleteRequest{Scope: testScope, Key: "k"}, bearer(adminToken))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(t.Context(), withHeader(&cachev1.DeleteRequest{Scope: testScope, Key: "k"}, bearer(writeToken))); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("writer's Delete: %v", err)
	}
	if _, err := c.Get(t.Context(), withHeader(&cachev1.GetRequest{Scope: testScope, Key: "k"}, bearer(adminToken))); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"audit"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want 2 audit lines (the Get logs none), got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, want := range []string{
		`"principal":"admin","procedure":"/cacheservice.v1.CacheService/Delete","org":"acme","project":"ml","domain":"production","allowed":true,"code":"ok"`,
		`"principal":"writer","procedure":"/cacheservice.v1.CacheService/Delete","org":"acme","project":"ml","domain":"production","allowed":false,"code":"permission_denied"`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("audit line %d = %s, want it to contain %s", i, lines[i], want)
		}
	}
	if strings.Contains(logs.String(), adminToken) || strings.Contains(logs.String(), writeToken) {
		t.Fatal("a token reached the log")
	}
}

func TestFailuresAreCountedByReason(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, baseFile(), nil)
	url, _ := startServer(t, a, nil)
	c := newClient(t, url, false, nil, nil)
	get := rpcs[0]
	_ = get.call(t.Context(), c, "k", http.Header{})
	_ = get.call(t.Context(), c, "k", bearer("wrong"))
	_ = get.call(t.Context(), c, "k", bearer("wrong"))
	_ = get.call(t.Context(), c, "k", bearer(otherToken))
	if got := a.stats.failures[reasonNoCredentials].Load(); got != 1 {
		t.Errorf("no_credentials = %d, want 1", got)
	}
	if got := a.stats.failures[reasonUnknownToken].Load(); got != 2 {
		t.Errorf("unknown_token = %d, want 2", got)
	}
	if got := a.stats.denied.Load(); got != 1 {
		t.Errorf("denied = %d, want 1", got)
	}
}
