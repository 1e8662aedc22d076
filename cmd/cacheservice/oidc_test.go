package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// oidcIssuer is an OIDC issuer on loopback over TLS: discovery and a key
// set holding one key, "k1".
type oidcIssuer struct {
	url, caFile string
	key         *ecdsa.PrivateKey
}

func newOIDCIssuer(t *testing.T) *oidcIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &oidcIssuer{key: key}
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	iss.url = srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss.url, "jwks_uri": iss.url + "/keys",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	iss.caFile = filepath.Join(t.TempDir(), "issuer-ca.pem")
	replaceFile(t, iss.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return iss
}

// token signs valid claims for subject, changed by edit, with key as kid.
func (iss *oidcIssuer) token(t *testing.T, key *ecdsa.PrivateKey, kid, subject string, edit func(map[string]any)) string {
	t.Helper()
	claims := map[string]any{
		"iss": iss.url, "aud": "cacheservice", "sub": subject,
		"iat": time.Now().Add(-time.Minute).Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(claims)
	}
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

// TestJWTBearerTokensThroughTheServer runs the server against a loopback
// issuer and calls Get over Connect and gRPC with tokens: a valid one of a
// listed service account is that principal; an expired one, one for
// another audience, one from another issuer and one signed by an unknown
// key are unauthenticated, as is a valid token naming nobody in the file.
func TestJWTBearerTokensThroughTheServer(t *testing.T) {
	t.Parallel()
	iss := newOIDCIssuer(t)
	const account = "system:serviceaccount:build:builder"
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile(`  - name: builder
    oidc_identities: ["`+account+`"]
    grants: [{org: acme, project: "*", domain: "*", role: read}]
`)), "--oidc-issuer", iss.url, "--oidc-audience", "cacheservice", "--oidc-ca-file", iss.caFile)
	rogue, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		want  connect.Code
	}{
		{"valid", iss.token(t, iss.key, "k1", account, nil), connect.CodeNotFound},
		{"expired", iss.token(t, iss.key, "k1", account, func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}), connect.CodeUnauthenticated},
		{"wrong audience", iss.token(t, iss.key, "k1", account, func(c map[string]any) { c["aud"] = "another-service" }), connect.CodeUnauthenticated},
		{"wrong issuer", iss.token(t, iss.key, "k1", account, func(c map[string]any) { c["iss"] = "https://issuer.example.com" }), connect.CodeUnauthenticated},
		{"unknown key", iss.token(t, rogue, "k2", account, nil), connect.CodeUnauthenticated},
		{"key id of a published key, wrong signature", iss.token(t, rogue, "k1", account, nil), connect.CodeUnauthenticated},
		{"unlisted subject", iss.token(t, iss.key, "k1", "system:serviceaccount:other:sa", nil), connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		for _, grpc := range []bool{false, true} {
			client := cachev1connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithProtoJSON(), bearer(tt.token))
			if grpc {
				client = cachev1connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithGRPC(), bearer(tt.token))
			}
			_, err := client.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: acme("jwt"), Key: "k"}))
			if code := connect.CodeOf(err); code != tt.want {
				t.Errorf("%s (grpc %v): %v, want %v", tt.name, grpc, err, tt.want)
			}
		}
	}
	// The valid token reads but does not write: the grant decides.
	client := cachev1connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithProtoJSON(), bearer(tests[0].token))
	_, err = client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: acme("jwt"), Key: "k", Output: uriOutput("s3://b/k")}))
	if code := connect.CodeOf(err); code != connect.CodePermissionDenied {
		t.Errorf("Put with a read-only JWT: %v, want permission_denied", err)
	}
}
