package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Bounds on talking to the issuer: discovery and key fetches never hang a
// call for long, and a down issuer is not asked again on every request.
const (
	issuerTimeout    = 10 * time.Second
	discoveryBackoff = 5 * time.Second
)

// oidcVerifier checks JWT bearer tokens against an issuer's published keys
// and remembers each verified token until it expires, so a worker that sends
// the same token on every call pays for the signature check once.
type oidcVerifier struct {
	issuer, audience, claim string
	client                  *http.Client
	now                     func() time.Time

	mu       sync.Mutex // guards the discovery state below
	verifier *oidc.IDTokenVerifier
	lastTry  time.Time

	cacheMu  sync.RWMutex
	cache    map[[32]byte]cachedToken // keyed by the token's SHA-256: no token kept
	maxCache int
}

type cachedToken struct {
	identity string
	expiry   time.Time
}

func newOIDCVerifier(cfg Config, now func() time.Time) (*oidcVerifier, error) {
	if cfg.OIDCAudience == "" {
		return nil, errors.New("--oidc-audience is required with --oidc-issuer: without it a token minted for any other service would be accepted")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.OIDCCAFile != "" {
		pem, err := os.ReadFile(cfg.OIDCCAFile)
		if err != nil {
			return nil, fmt.Errorf("read OIDC CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("OIDC CA bundle %s holds no PEM certificate", cfg.OIDCCAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	claim := cfg.OIDCClaim
	if claim == "" {
		claim = "sub"
	}
	size := cfg.JWTCacheSize
	if size <= 0 {
		size = 10000
	}
	return &oidcVerifier{
		issuer:   cfg.OIDCIssuer,
		audience: cfg.OIDCAudience,
		claim:    claim,
		client:   &http.Client{Transport: transport, Timeout: issuerTimeout},
		now:      now,
		cache:    make(map[[32]byte]cachedToken),
		maxCache: size,
	}, nil
}

// idTokenVerifier discovers the issuer on first use rather than at start, so
// a server that starts before its issuer answers still serves static tokens,
// and retries at most every discoveryBackoff.
func (v *oidcVerifier) idTokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	if !v.lastTry.IsZero() && time.Since(v.lastTry) < discoveryBackoff {
		return nil, errors.New("OIDC issuer discovery failed recently")
	}
	v.lastTry = time.Now()
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), v.client), issuerTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, v.issuer)
	if err != nil {
		return nil, fmt.Errorf("discover OIDC issuer: %w", err)
	}
	// Through a closure so that tests can move the clock later.
	v.verifier = provider.Verifier(&oidc.Config{ClientID: v.audience, Now: func() time.Time { return v.now() }})
	return v.verifier, nil
}

// identity returns the configured claim of a valid token. sum is the token's
// SHA-256, the cache key.
func (v *oidcVerifier) identity(ctx context.Context, raw string, sum *[32]byte) (string, reason) {
	now := v.now()
	v.cacheMu.RLock()
	c, ok := v.cache[*sum]
	v.cacheMu.RUnlock()
	if ok && now.Before(c.expiry) {
		return c.identity, reasonNone
	}

	verifier, err := v.idTokenVerifier(ctx)
	if err != nil {
		return "", reasonIssuerUnavailable
	}
	tok, err := verifier.Verify(ctx, raw)
	if err != nil {
		if _, expired := errors.AsType[*oidc.TokenExpiredError](err); expired {
			return "", reasonExpiredJWT
		}
		return "", reasonInvalidJWT
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return "", reasonInvalidJWT
	}
	id, _ := claims[v.claim].(string)
	if id == "" {
		return "", reasonMissingClaim
	}
	v.remember(*sum, cachedToken{identity: id, expiry: tok.Expiry})
	return id, reasonNone
}

// remember caches a verified token. The cache is bounded: expired entries go
// first, then arbitrary ones (Go's map order), which costs only a later
// re-verification.
func (v *oidcVerifier) remember(sum [32]byte, c cachedToken) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	if len(v.cache) >= v.maxCache {
		now := v.now()
		for k, e := range v.cache {
			if !now.Before(e.expiry) {
				delete(v.cache, k)
			}
		}
		for k := range v.cache {
			if len(v.cache) < v.maxCache {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[sum] = c
}

func (v *oidcVerifier) cached() int {
	v.cacheMu.RLock()
	defer v.cacheMu.RUnlock()
	return len(v.cache)
}

// looksLikeJWT tells a compact JWS (three dot-separated parts) from an opaque
// static token without allocating.
func looksLikeJWT(token string) bool {
	return strings.Count(token, ".") == 2
}
