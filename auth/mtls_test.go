package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate: a server's for 127.0.0.1, or a client's
// with the given CN and URI SANs.
func (ca *testCA) issue(t *testing.T, cn string, uris []string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMTLSIdentities(t *testing.T) {
	t.Parallel()
	ca, rogue := newCA(t, "test CA"), newCA(t, "rogue CA")
	a, _ := newAuthenticator(t, baseFile()+`  - name: spiffe-worker
    mtls_identities: ["spiffe://cluster.local/ns/ml/sa/worker"]
    grants: [{org: acme, project: ml, domain: "*", role: write}]
  - name: cn-worker
    mtls_identities: [batch-runner]
    grants: [{org: acme, project: "*", domain: "*", role: read}]
  - name: loopback
    networks: [127.0.0.0/8]
    grants: [{org: acme, project: "*", domain: "*", role: read}]
`, nil)
	// As the server will: a certificate is verified when presented, never
	// required, so probes without one still connect.
	url, rec := startServer(t, a, &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "server", nil, true)},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	})
	spiffe := ca.issue(t, "ignored-cn", []string{"spiffe://cluster.local/ns/ml/sa/worker"}, false)
	byCN := ca.issue(t, "batch-runner", nil, false)
	unknown := ca.issue(t, "stranger", []string{"spiffe://cluster.local/ns/x/sa/y"}, false)
	forged := rogue.issue(t, "batch-runner", []string{"spiffe://cluster.local/ns/ml/sa/worker"}, false)
	get, put := rpcs[0], rpcs[1]

	cases := []struct {
		name string
		cert *tls.Certificate
		h    http.Header
		r    rpc
		want connect.Code
		who  string
	}{
		{"URI SAN names the principal", &spiffe, http.Header{}, put, 0, "spiffe-worker"},
		{"URI SAN principal's grant bounds it", &spiffe, http.Header{}, rpcs[4], connect.CodePermissionDenied, ""},
		{"CN when no URI SAN", &byCN, http.Header{}, get, 0, "cn-worker"},
		{"CN principal may not write", &byCN, http.Header{}, put, connect.CodePermissionDenied, ""},
		// A verified certificate that no principal lists decides: the
		// loopback network's grant does not apply.
		{"unknown identity", &unknown, http.Header{}, get, connect.CodeUnauthenticated, ""},
		// A token decides over the certificate.
		{"token beside certificate", &spiffe, bearer(readToken), put, connect.CodePermissionDenied, ""},
		{"no certificate: network decides", nil, http.Header{}, get, 0, "loopback"},
	}
	for _, kind := range clientKinds {
		for _, c := range cases {
			name := kind.name + "/" + c.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
				if c.cert != nil {
					cfg.Certificates = []tls.Certificate{*c.cert}
				}
				client := newClient(t, url, kind.grpc, nil, cfg)
				expectCall(t, rec, client, c.r, name, c.h, c.want, c.who)
			})
		}
	}
	t.Run("certificate of an unknown CA is refused at the handshake", func(t *testing.T) {
		t.Parallel()
		// GetClientCertificate sends it whatever CAs the server asks for (with
		// Certificates, Go's client would quietly send none).
		client := newClient(t, url, false, nil, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }})
		const key = "forged"
		if err := get.call(t.Context(), client, key, http.Header{}); err == nil {
			t.Fatal("a certificate from an unknown CA was accepted")
		}
		if _, reached := rec.reached(key); reached {
			t.Fatal("handler reached")
		}
	})
	t.Run("an unverified certificate names no one", func(t *testing.T) {
		t.Parallel()
		// A server that asks for certificates without verifying them: the
		// rogue certificate claims the SPIFFE worker's identity, and must
		// count for nothing (the loopback network, read only, decides).
		url, rec := startServer(t, a, &tls.Config{
			Certificates: []tls.Certificate{ca.issue(t, "server", nil, true)},
			ClientAuth:   tls.RequestClientCert,
			MinVersion:   tls.VersionTLS12,
		})
		client := newClient(t, url, false, nil, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }})
		if err := put.call(t.Context(), client, "unverified", http.Header{}); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("Put with an unverified certificate: %v, want permission_denied", err)
		}
		if err := get.call(t.Context(), client, "unverified-get", http.Header{}); err != nil {
			t.Fatal(err)
		}
		if p, _ := rec.reached("unverified-get"); p == nil || p.Name != "loopback" {
			t.Fatalf("handler saw %v, want loopback", p)
		}
	})
}
