package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cacheservice/cacheservice/auth/authfile"
)

// Config says where principals come from. cmd fills it from flags.
type Config struct {
	// File is the auth file (--auth-file): principals and their grants.
	File string
	// OIDCIssuer (--oidc-issuer) turns on JWT bearer tokens verified against
	// this issuer's published keys; OIDCAudience (--oidc-audience) is then
	// required. OIDCClaim names the principal (default "sub"); OIDCCAFile is
	// a PEM bundle that replaces the system roots for the issuer's TLS.
	OIDCIssuer, OIDCAudience, OIDCClaim, OIDCCAFile string
	// JWTCacheSize bounds how many verified tokens are remembered (default
	// 10000).
	JWTCacheSize int
	// TrustedProxies (--trusted-proxies) are the peers whose X-Forwarded-For
	// header is believed when matching networks. None by default: the TCP
	// peer's address is the caller's.
	TrustedProxies []netip.Prefix
	// Logger receives reloads, audit lines and failures; never a credential.
	Logger *slog.Logger
}

// Authenticator decides who a caller is and what it may do. It is safe for
// concurrent use; the auth file behind it can be swapped at any time.
type Authenticator struct {
	file           string
	trustedProxies []netip.Prefix
	log            *slog.Logger
	oidc           *oidcVerifier // nil without an issuer

	policy   atomic.Pointer[authfile.File]
	reloadMu sync.Mutex // one reload at a time
	fileSum  [32]byte   // SHA-256 of the file in force, under reloadMu

	stats counters
}

// New reads the auth file and returns an Authenticator, or an error naming
// what is wrong with the configuration or the file.
func New(cfg Config) (*Authenticator, error) {
	if cfg.File == "" {
		return nil, errors.New("--auth-file is required: every principal's grants come from it")
	}
	a := &Authenticator{file: cfg.File, trustedProxies: cfg.TrustedProxies, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.TrustedProxies {
		if p.Masked() != p {
			return nil, fmt.Errorf("trusted proxy %s has host bits set; did you mean %s?", p, p.Masked())
		}
	}
	if cfg.OIDCIssuer != "" {
		v, err := newOIDCVerifier(cfg, time.Now)
		if err != nil {
			return nil, err
		}
		a.oidc = v
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload re-reads the auth file. A file that cannot be read or parsed leaves
// the one in force untouched (so a bad edit never locks everyone out), is
// logged and counted, and its error is returned.
func (a *Authenticator) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	data, err := os.ReadFile(a.file)
	if err == nil {
		var p *authfile.File
		if p, err = authfile.Parse(data); err == nil {
			a.policy.Store(p)
			a.fileSum = sha256.Sum256(data)
			a.stats.reloaded(true)
			a.log.Info("auth file loaded", "file", a.file, "principals", p.Principals())
			return nil
		}
	}
	a.stats.reloaded(false)
	if a.policy.Load() != nil {
		a.log.Error("auth file not reloaded; the previous one stays in force", "file", a.file, "err", err)
	}
	return fmt.Errorf("load auth file %s: %w", a.file, err)
}

// reloadIfChanged reloads only when the file's bytes differ from the ones in
// force: directory events fire for many reasons (a Secret's other keys, an
// editor's swap file) and each must not log a reload.
func (a *Authenticator) reloadIfChanged() {
	data, err := os.ReadFile(a.file)
	if err == nil {
		a.reloadMu.Lock()
		same := sha256.Sum256(data) == a.fileSum
		a.reloadMu.Unlock()
		if same {
			return
		}
	}
	_ = a.Reload() // logged and counted there
}

// reason is why an authentication failed; each is a metric label.
type reason uint8

const (
	reasonNone              reason = iota
	reasonNoCredentials            // nothing presented and no network matched
	reasonMalformedHeader          // Authorization is not "Bearer <token>"
	reasonUnknownToken             // not a listed static token, and not a JWT we verify
	reasonInvalidJWT               // signature, issuer, audience or format
	reasonExpiredJWT               // a valid token past its expiry
	reasonMissingClaim             // the configured claim is absent or not a string
	reasonUnknownIdentity          // a verified JWT or certificate that no principal lists
	reasonIssuerUnavailable        // the OIDC issuer could not be reached
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone:              "none",
	reasonNoCredentials:     "no_credentials",
	reasonMalformedHeader:   "malformed_header",
	reasonUnknownToken:      "unknown_token",
	reasonInvalidJWT:        "invalid_jwt",
	reasonExpiredJWT:        "expired_jwt",
	reasonMissingClaim:      "missing_claim",
	reasonUnknownIdentity:   "unknown_identity",
	reasonIssuerUnavailable: "issuer_unavailable",
}

// reasonMessages are what the caller is told: enough to fix its setup,
// nothing it sent echoed back.
var reasonMessages = [numReasons]error{
	reasonNoCredentials:     errors.New("credentials required: send Authorization: Bearer <token> or a client certificate"),
	reasonMalformedHeader:   errors.New("malformed Authorization header: want \"Bearer <token>\""),
	reasonUnknownToken:      errors.New("invalid bearer token"),
	reasonInvalidJWT:        errors.New("invalid bearer token"),
	reasonExpiredJWT:        errors.New("bearer token expired"),
	reasonMissingClaim:      errors.New("bearer token lacks the claim that names the principal"),
	reasonUnknownIdentity:   errors.New("identity is not a principal of this server"),
	reasonIssuerUnavailable: errors.New("cannot verify bearer token now: token issuer unreachable"),
}

// authenticate finds the principal behind a call. Presented credentials
// decide, in this order: a bearer token, then a verified client certificate;
// only a caller that presents neither is matched by its network, so an
// invalid token is refused even from a granted network.
func (a *Authenticator) authenticate(ctx context.Context, header http.Header, peer string, state *tls.ConnectionState) (*Principal, reason) {
	pol := a.policy.Load()
	if authz := header.Get("Authorization"); authz != "" {
		token, ok := bearerToken(authz)
		if !ok {
			return nil, reasonMalformedHeader
		}
		// The token's bytes are only read, so no copy is needed to hash them.
		sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
		if p := pol.ByTokenHash(&sum); p != nil {
			return p, reasonNone
		}
		if a.oidc == nil || !looksLikeJWT(token) {
			return nil, reasonUnknownToken
		}
		id, why := a.oidc.identity(ctx, token, &sum)
		if why != reasonNone {
			return nil, why
		}
		if p := pol.ByOIDCIdentity(id); p != nil {
			return p, reasonNone
		}
		return nil, reasonUnknownIdentity
	}
	if state != nil && len(state.VerifiedChains) > 0 && len(state.VerifiedChains[0]) > 0 {
		// Only a chain the TLS handshake verified counts: PeerCertificates
		// alone may be anyone's.
		leaf := state.VerifiedChains[0][0]
		for _, u := range leaf.URIs {
			if p := pol.ByMTLSIdentity(u.String()); p != nil {
				return p, reasonNone
			}
		}
		if p := pol.ByMTLSIdentity(leaf.Subject.CommonName); p != nil {
			return p, reasonNone
		}
		return nil, reasonUnknownIdentity
	}
	if addr, ok := a.clientAddr(header, peer); ok {
		if p := pol.ByAddr(addr); p != nil {
			return p, reasonNone
		}
	}
	return nil, reasonNoCredentials
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110).
func bearerToken(h string) (string, bool) {
	const scheme = "Bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimSpace(h[len(scheme):])
	return token, token != ""
}

// clientAddr is the address to match against networks: the TCP peer's, or,
// when the peer is a trusted proxy, the nearest address in X-Forwarded-For
// that is not itself a trusted proxy (the rightmost entries are the ones the
// trusted proxies appended; anything left of them the client could forge).
func (a *Authenticator) clientAddr(header http.Header, peer string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := ap.Addr().Unmap()
	if !a.trusted(addr) {
		return addr, true
	}
	values := header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		rest := values[i]
		for rest != "" {
			var hop string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				hop, rest = rest[j+1:], rest[:j]
			} else {
				hop, rest = rest, ""
			}
			hopAddr, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				return netip.Addr{}, false // a garbled chain matches nothing
			}
			hopAddr = hopAddr.Unmap()
			if !a.trusted(hopAddr) {
				return hopAddr, true
			}
			addr = hopAddr
		}
	}
	// Every hop is a trusted proxy: the call started at the last of them.
	return addr, true
}

func (a *Authenticator) trusted(addr netip.Addr) bool {
	for _, p := range a.trustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParsePrefixes reads a comma-separated list of CIDRs or single addresses
// (a /32 or /128), as --trusted-proxies takes it. An empty string is none.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if addr, err := netip.ParseAddr(part); err == nil {
			out = append(out, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR such as 10.0.0.0/8", part)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has host bits set; did you mean %s?", part, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}
