package auth

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// manyPrincipals is baseFile plus n more token principals, since the static
// token scan compares every hash.
func manyPrincipals(n int) string {
	var b strings.Builder
	b.WriteString(baseFile())
	for i := range n {
		fmt.Fprintf(&b, "  - name: p%d\n    token_sha256: %s\n    grants: [{org: org%d, project: '*', domain: '*', role: read}]\n", i, sha(fmt.Sprint("token-", i)), i)
	}
	return b.String()
}

// benchCheck measures the whole decision the interceptor makes per call:
// header, credential, role, scope and grant.
func benchCheck(b *testing.B, a *Authenticator, h http.Header, peer string) {
	req := &cachev1.PutRequest{Scope: testScope, Key: "k"}
	ctx := b.Context()
	if _, _, _, err := a.check(ctx, rpcs[1].procedure, h, peer, nil, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := a.check(ctx, rpcs[1].procedure, h, peer, nil, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckStaticToken(b *testing.B) {
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprintf("principals=%d", 4+n), func(b *testing.B) {
			a, _ := newAuthenticator(b, manyPrincipals(n), nil)
			benchCheck(b, a, bearer(writeToken), "127.0.0.1:5000")
		})
	}
}

func BenchmarkCheckCachedJWT(b *testing.B) {
	iss := newIssuer(b)
	a, _ := newAuthenticator(b, oidcFile(), withIssuer(iss))
	benchCheck(b, a, bearer(iss.token(b, iss.key, "k1", iss.claims(serviceAccount, nil))), "127.0.0.1:5000")
}

func BenchmarkCheckNetwork(b *testing.B) {
	a, _ := newAuthenticator(b, networkFile(), nil)
	benchCheck(b, a, http.Header{}, "127.0.0.5:5000")
}

// BenchmarkCheckUncachedJWT is the price of the first call with a token:
// the signature check that the cache saves on every later one.
func BenchmarkCheckUncachedJWT(b *testing.B) {
	iss := newIssuer(b)
	a, _ := newAuthenticator(b, oidcFile(), withIssuer(iss))
	h := bearer(iss.token(b, iss.key, "k1", iss.claims(serviceAccount, nil)))
	req := &cachev1.PutRequest{Scope: testScope, Key: "k"}
	if _, _, _, err := a.check(b.Context(), rpcs[1].procedure, h, "127.0.0.1:1", nil, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		a.oidc.cacheMu.Lock()
		clear(a.oidc.cache)
		a.oidc.cacheMu.Unlock()
		if _, _, _, err := a.check(b.Context(), rpcs[1].procedure, h, "127.0.0.1:1", nil, req); err != nil {
			b.Fatal(err)
		}
	}
}
