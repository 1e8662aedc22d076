package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// testIssuer is an OIDC issuer on loopback (TLS, so the CA bundle option is
// exercised): discovery and a JWKS holding one key, "k1".
type testIssuer struct {
	url     string
	caFile  string
	key     *ecdsa.PrivateKey // published as k1
	rogue   *ecdsa.PrivateKey // never published
	jwksHit atomic.Int64
}

func newIssuer(t testing.TB) *testIssuer {
	t.Helper()
	iss := &testIssuer{}
	var err error
	if iss.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if iss.rogue, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	iss.url = srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                iss.url,
			"jwks_uri":                              iss.url + "/keys",
			"authorization_endpoint":                iss.url + "/auth",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		iss.jwksHit.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &iss.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	iss.caFile = filepath.Join(t.TempDir(), "issuer-ca.pem")
	writeFile(t, iss.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	return iss
}

// token signs claims with key under key id kid.
func (iss *testIssuer) token(t testing.TB, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// claims are valid ones for subject; edit changes them.
func (iss *testIssuer) claims(subject string, edit func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": iss.url, "aud": "cacheservice", "sub": subject,
		"iat": time.Now().Add(-time.Minute).Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

const serviceAccount = "system:serviceaccount:ml:worker"

func oidcFile() string {
	return baseFile() + `  - name: k8s-worker
    oidc_identities: ["` + serviceAccount + `"]
    grants: [{org: acme, project: "*", domain: "*", role: write}]
`
}

func withIssuer(iss *testIssuer) func(*Config) {
	return func(c *Config) {
		c.OIDCIssuer, c.OIDCAudience, c.OIDCCAFile = iss.url, "cacheservice", iss.caFile
	}
}

func TestJWTBearerTokens(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	a, logs := newAuthenticator(t, oidcFile(), withIssuer(iss))
	url, rec := startServer(t, a, nil)
	get, put := rpcs[0], rpcs[1]
	valid := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, nil))

	cases := []struct {
		name  string
		token string
		r     rpc
		want  connect.Code
	}{
		{"valid", valid, put, 0},
		{"valid, beyond its grant", valid, rpcs[4], connect.CodePermissionDenied},
		{"expired", iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })), get, connect.CodeUnauthenticated},
		{"wrong audience", iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { c["aud"] = "another-service" })), get, connect.CodeUnauthenticated},
		{"wrong issuer", iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { c["iss"] = "https://issuer.invalid" })), get, connect.CodeUnauthenticated},
		{"unknown key", iss.token(t, iss.rogue, "k2", iss.claims(serviceAccount, nil)), get, connect.CodeUnauthenticated},
		{"known key id, other key", iss.token(t, iss.rogue, "k1", iss.claims(serviceAccount, nil)), get, connect.CodeUnauthenticated},
		{"subject no principal lists", iss.token(t, iss.key, "k1", iss.claims("system:serviceaccount:x:y", nil)), get, connect.CodeUnauthenticated},
		{"no subject", iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { delete(c, "sub") })), get, connect.CodeUnauthenticated},
		{"tampered payload", valid[:len(valid)-4] + "AAAA", get, connect.CodeUnauthenticated},
	}
	for _, kind := range clientKinds {
		client := newClient(t, url, kind.grpc, nil, nil)
		for _, c := range cases {
			name := kind.name + "/" + c.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				expectCall(t, rec, client, c.r, name, bearer(c.token), c.want, "k8s-worker")
			})
		}
	}
	t.Cleanup(func() {
		for r, want := range map[reason]uint64{reasonExpiredJWT: 2, reasonInvalidJWT: 10, reasonUnknownIdentity: 2, reasonMissingClaim: 2} {
			if got := a.stats.failures[r].Load(); got != want {
				t.Errorf("failures[%s] = %d, want %d", reasonNames[r], got, want)
			}
		}
		// Only verified tokens are remembered: the valid one and the one whose
		// subject no principal lists (a reloaded file may list it).
		if got := a.oidc.cached(); got != 2 {
			t.Errorf("%d tokens cached, want 2", got)
		}
		if strings.Contains(logs.String(), valid) {
			t.Error("a token reached the log")
		}
	})
}

func TestVerifiedJWTIsCachedUntilItExpires(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	a, _ := newAuthenticator(t, oidcFile(), withIssuer(iss))
	exp := time.Now().Add(10 * time.Minute).Truncate(time.Second)
	withExp := func(c map[string]any) { c["exp"] = exp.Unix() }
	cached := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, withExp))
	check := func(token string) error {
		_, _, _, err := a.check(t.Context(), rpcs[0].procedure, bearer(token), "127.0.0.1:1", nil, &cachev1.GetRequest{Scope: testScope})
		return err
	}
	if err := check(cached); err != nil {
		t.Fatal(err)
	}
	// From now on every verification fails (no keys, another audience): a
	// cached token does not reach the verifier, a new one does.
	a.oidc.mu.Lock()
	a.oidc.verifier = oidc.NewVerifier(iss.url, &oidc.StaticKeySet{}, &oidc.Config{ClientID: "nobody"})
	a.oidc.mu.Unlock()
	if err := check(cached); err != nil {
		t.Fatalf("cached token refused: %v", err)
	}
	fresh := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { withExp(c); c["jti"] = "another" }))
	if err := check(fresh); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("uncached token with a refusing verifier: %v", err)
	}
	// At its expiry the cached entry no longer counts.
	a.oidc.now = func() time.Time { return exp }
	if err := check(cached); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("cached token past its expiry: %v", err)
	}
}

func TestJWTCacheIsBounded(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	a, _ := newAuthenticator(t, oidcFile(), func(c *Config) { withIssuer(iss)(c); c.JWTCacheSize = 2 })
	for i := range 5 {
		tok := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { c["jti"] = i }))
		if _, _, _, err := a.check(t.Context(), rpcs[0].procedure, bearer(tok), "127.0.0.1:1", nil, &cachev1.GetRequest{Scope: testScope}); err != nil {
			t.Fatal(err)
		}
		if n := a.oidc.cached(); n > 2 {
			t.Fatalf("cache holds %d tokens, bound is 2", n)
		}
	}
}

func TestJWTClaimNamesThePrincipal(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	a, _ := newAuthenticator(t, baseFile()+`  - name: by-email
    oidc_identities: [worker@example.com]
    grants: [{org: acme, project: "*", domain: "*", role: read}]
`, func(c *Config) { withIssuer(iss)(c); c.OIDCClaim = "email" })
	tok := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, func(c map[string]any) { c["email"] = "worker@example.com" }))
	p, _, _, err := a.check(t.Context(), rpcs[0].procedure, bearer(tok), "127.0.0.1:1", nil, &cachev1.GetRequest{Scope: testScope})
	if err != nil || p.Name != "by-email" {
		t.Fatalf("principal %v, err %v; want by-email", p, err)
	}
}

func TestUnreachableIssuerIsUnavailableAndStaticTokensStillWork(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // nothing listens there any more
	a, _ := newAuthenticator(t, oidcFile(), func(c *Config) { c.OIDCIssuer, c.OIDCAudience = closed.URL, "cacheservice" })
	iss := newIssuer(t) // only to sign a well-formed token
	tok := iss.token(t, iss.key, "k1", iss.claims(serviceAccount, nil))
	req := &cachev1.GetRequest{Scope: testScope}
	for range 2 { // the second is answered from the discovery backoff
		_, _, _, err := a.check(t.Context(), rpcs[0].procedure, bearer(tok), "127.0.0.1:1", nil, req)
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("JWT with the issuer down: %v, want unavailable", err)
		}
	}
	if got := a.stats.failures[reasonIssuerUnavailable].Load(); got != 2 {
		t.Errorf("issuer_unavailable = %d, want 2", got)
	}
	if _, _, _, err := a.check(t.Context(), rpcs[0].procedure, bearer(readToken), "127.0.0.1:1", nil, req); err != nil {
		t.Fatalf("static token with the issuer down: %v", err)
	}
}

func TestOIDCNeedsAnAudience(t *testing.T) {
	t.Parallel()
	_, err := New(Config{File: writeFile(t, filepath.Join(t.TempDir(), "a.yaml"), baseFile()), OIDCIssuer: "https://issuer.example"})
	if err == nil || !strings.Contains(err.Error(), "--oidc-audience") {
		t.Fatalf("err = %v, want one naming --oidc-audience", err)
	}
}
