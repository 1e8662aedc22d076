// Package tlsconfig builds the *tls.Config of the main port from certificate, key and optional
// client-CA files, and keeps it current: the files are re-read when they change (cert-manager
// rotating a Kubernetes Secret) or on Reload (SIGHUP), without a restart and without touching
// established connections, which keep the certificate they were opened with. A new set of files
// that fails to load leaves the previous one in force.
//
// It owns TLS material only. It does not decide what a verified client identity may do (the auth
// package does), knows no flag names, and exports no metrics itself: State gives the counters.
package tlsconfig

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config names the files to serve. CertFile and KeyFile are required; ClientCAFile enables
// verification of client certificates (mTLS) when a client presents one.
type Config struct {
	CertFile     string // PEM certificate chain, leaf first
	KeyFile      string // PEM private key of the leaf
	ClientCAFile string // PEM bundle of CAs client certificates must chain to; empty: none requested
	Logger       *slog.Logger
	// Debounce is how long Watch waits after the last change in a watched directory before it
	// re-reads the files, so that files written one after another are read as one set. Zero
	// means DefaultDebounce.
	Debounce time.Duration
}

// DefaultDebounce is Config.Debounce when unset: longer than the gap between the writes of a
// Secret update, short enough that a rotation is served within a fraction of a second.
const DefaultDebounce = 100 * time.Millisecond

// State is what a Reloader has done, for metrics and logs.
type State struct {
	Reloads  uint64    // successful loads that changed the material, the first one included
	Failures uint64    // loads that failed and left the previous material in force
	NotAfter time.Time // expiry of the certificate now served
	Serial   string    // serial number (hex) of the certificate now served
}

// Reloader serves the current certificate and client-CA pool. Its methods are safe for
// concurrent use.
type Reloader struct {
	cfg    Config
	logger *slog.Logger
	// current is the config a handshake uses: cert, CA pool and settings of one consistent load.
	current atomic.Pointer[material]
	// reloadMu serializes loads, so two reloads never interleave and the counters match the logs.
	reloadMu sync.Mutex
	reloads  atomic.Uint64
	failures atomic.Uint64
}

// material is one successfully loaded set of files.
type material struct {
	config *tls.Config
	cert   *tls.Certificate
	digest [sha256.Size]byte // of the bytes read, to skip reloads that change nothing
}

// New reads the files once and returns a Reloader serving them. An error here is a
// configuration error: the server should not start.
func New(cfg Config) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: both a certificate file and a key file are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	r := &Reloader{cfg: cfg, logger: cfg.Logger.With(slog.String("component", "tls"))}
	m, err := r.load()
	if err != nil {
		return nil, err
	}
	r.current.Store(m)
	r.reloads.Add(1)
	r.logLoaded("tls certificate loaded", m)
	return r, nil
}

// TLSConfig returns the config to give http.Server.TLSConfig (then call ServeTLS(ln, "", "")) or
// tls.NewListener. It negotiates HTTP/2 and HTTP/1.1 by ALPN, so gRPC works over it, and hands
// every handshake the material loaded last. Each call returns a new *tls.Config.
//
// The server must speak both: an http.Server whose Protocols is set should SetHTTP2(true) beside
// SetHTTP1(true), since the handshake offers h2 whatever Protocols says (http.Server adjusts only
// its own copy of NextProtos, which GetConfigForClient replaces).
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos(),
		// Both hooks read the current material: GetCertificate for code that only looks at it
		// (http.Server checks it is set before serving), GetConfigForClient so the CA pool
		// rotates with the certificate.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.current.Load().cert, nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current.Load().config, nil
		},
	}
}

// nextProtos lists HTTP/2 first: gRPC clients need it, and every HTTP/2 client also speaks it
// better than HTTP/1.1.
func nextProtos() []string { return []string{"h2", "http/1.1"} }

// Reload re-reads the files now (call it on SIGHUP). On error the previous material stays in
// force, the failure is logged and counted, and the error is returned.
func (r *Reloader) Reload() error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	m, err := r.load()
	if err != nil {
		r.failures.Add(1)
		prev := r.current.Load()
		r.logger.Error("tls certificate reload failed; still serving the previous one",
			slog.String("error", err.Error()), slog.String("serial", serialOf(prev.cert)))
		return err
	}
	if m.digest == r.current.Load().digest {
		return nil
	}
	r.current.Store(m)
	r.reloads.Add(1)
	r.logLoaded("tls certificate reloaded", m)
	return nil
}

// State returns the counters and the certificate now served.
func (r *Reloader) State() State {
	cert := r.current.Load().cert
	return State{
		Reloads:  r.reloads.Load(),
		Failures: r.failures.Load(),
		NotAfter: cert.Leaf.NotAfter,
		Serial:   serialOf(cert),
	}
}

// load reads and parses the files into a complete server config.
func (r *Reloader) load() (*material, error) {
	certPEM, err := os.ReadFile(r.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: read key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The message names the files, never their contents.
		return nil, fmt.Errorf("tls: load certificate %s with key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	// Go fills Leaf since 1.23; parse only if an older behaviour ever comes back.
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse certificate %s: %w", r.cfg.CertFile, err)
		}
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)

	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   nextProtos(),
		Certificates: []tls.Certificate{cert},
	}
	if r.cfg.ClientCAFile != "" {
		caPEM, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("tls: client CA file %s holds no PEM certificate", r.cfg.ClientCAFile)
		}
		h.Write([]byte{0})
		h.Write(caPEM)
		// A client without a certificate is let through the handshake: its other credentials
		// decide, and kubelet probes carry none. One that presents a certificate must chain to
		// the pool, or the handshake fails.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
	}
	m := &material{config: cfg, cert: &cfg.Certificates[0]}
	copy(m.digest[:], h.Sum(nil))
	return m, nil
}

func (r *Reloader) logLoaded(msg string, m *material) {
	r.logger.Info(msg,
		slog.String("subject", m.cert.Leaf.Subject.String()),
		slog.String("serial", serialOf(m.cert)),
		slog.Time("not_after", m.cert.Leaf.NotAfter),
		slog.Bool("client_ca", r.cfg.ClientCAFile != ""))
}

func serialOf(c *tls.Certificate) string {
	if c == nil || c.Leaf == nil {
		return ""
	}
	return fmt.Sprintf("%x", c.Leaf.SerialNumber)
}

// Identity returns the caller's identity from a connection state whose client certificate was
// verified: the certificate's first URI SAN (a SPIFFE ID such as spiffe://cluster/ns/ci/sa/worker),
// else its subject common name. It reports false when no certificate was presented, none was
// verified against a CA (only VerifiedChains count, never PeerCertificates alone), or the
// certificate names nobody.
func Identity(cs *tls.ConnectionState) (string, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	leaf := cs.VerifiedChains[0][0]
	// VerifiedChains start with the peer's own leaf; guard against a state assembled by hand.
	if len(cs.PeerCertificates) == 0 || !bytes.Equal(leaf.Raw, cs.PeerCertificates[0].Raw) {
		return "", false
	}
	if len(leaf.URIs) > 0 {
		return leaf.URIs[0].String(), true
	}
	if leaf.Subject.CommonName != "" {
		return leaf.Subject.CommonName, true
	}
	return "", false
}
