package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial atomic.Int64

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf: a server certificate for 127.0.0.1 when uri is empty,
// else a client certificate naming uri. It returns PEM certificate and key
// and the serial number.
func (ca *testCA) issue(t *testing.T, uri string) (certPEM, keyPEM []byte, sn *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn = big.NewInt(serial.Add(1))
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if uri == "" {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), sn
}

// replaceFile writes data to path by renaming a new file over it, as
// cert-manager's kubelet update and editors do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsClient trusts ca and presents cert (if any), speaking HTTP/2 when h2,
// else HTTP/1.1 on a new connection per call (so each call handshakes).
func tlsClient(t *testing.T, ca *testCA, cert *tls.Certificate, h2 bool) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
		tr.DisableKeepAlives = true
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: callTimeout}
}

// servedSerial handshakes with addr and returns the serial of the server's
// certificate.
func servedSerial(t *testing.T, addr string, ca *testCA) *big.Int {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: callTimeout}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// tlsFiles writes a server certificate of ca to a directory and returns the
// paths and serial.
func tlsFiles(t *testing.T, ca *testCA) (certFile, keyFile string, sn *big.Int) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, sn := ca.issue(t, "")
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	replaceFile(t, certFile, certPEM)
	replaceFile(t, keyFile, keyPEM)
	return certFile, keyFile, sn
}

// TestTLSCertificateRotatesWhileClientsCall serves TLS with a token check,
// and keeps gRPC (HTTP/2, one connection) and Connect (HTTP/1.1, a new
// handshake per call) clients calling while the certificate files are
// replaced: the new certificate is served to new handshakes, and no call
// fails.
func TestTLSCertificateRotatesWhileClientsCall(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "test server CA")
	certFile, keyFile, first := tlsFiles(t, ca)
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--metrics-addr", "127.0.0.1:0")
	addr := strings.TrimPrefix(s.url, "https://")
	if got := servedSerial(t, addr, ca); got.Cmp(first) != 0 {
		t.Fatalf("served serial %v, want %v", got, first)
	}
	clients := map[string]cachev1connect.CacheServiceClient{
		"grpc/h2":             cachev1connect.NewCacheServiceClient(tlsClient(t, ca, nil, true), s.url, connect.WithGRPC(), bearer(writeToken)),
		"connect/http1.1+tls": cachev1connect.NewCacheServiceClient(tlsClient(t, ca, nil, false), s.url, connect.WithProtoJSON(), bearer(writeToken)),
	}
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		calls  atomic.Int64
		failMu sync.Mutex
		fails  []string
	)
	for name, c := range clients {
		wg.Go(func() {
			deadline := time.Now().Add(30 * time.Second) // bound, whatever happens
			for i := 0; !stop.Load() && time.Now().Before(deadline) && i < 100000; i++ {
				_, err := c.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
					Scope: acme("rotate"), Key: name + "-" + big.NewInt(int64(i)).String(), Output: uriOutput("s3://b/r"),
				}))
				calls.Add(1)
				if err != nil {
					failMu.Lock()
					fails = append(fails, name+": "+err.Error())
					failMu.Unlock()
				}
			}
		})
	}
	waitFor(t, 10*time.Second, "calls before the rotation", func() bool { return calls.Load() > 20 })
	certPEM, keyPEM, second := ca.issue(t, "")
	replaceFile(t, keyFile, keyPEM)
	replaceFile(t, certFile, certPEM)
	waitFor(t, 10*time.Second, "the new certificate to be served", func() bool {
		return servedSerial(t, addr, ca).Cmp(second) == 0
	})
	before := calls.Load()
	waitFor(t, 10*time.Second, "calls after the rotation", func() bool { return calls.Load() > before+20 })
	stop.Store(true)
	wg.Wait()
	if len(fails) > 0 {
		t.Errorf("%d of %d calls failed across the rotation; first: %s", len(fails), calls.Load(), fails[0])
	}
	if !strings.Contains(s.logs.String(), "tls certificate reloaded") {
		t.Errorf("no reload line in the log")
	}
	m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no metrics listening line")
	}
	res, err := http1Client(t).Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "cacheservice_tls_reloads_total 2") {
		t.Errorf("/metrics lacks cacheservice_tls_reloads_total 2 after one rotation")
	}
}

// TestMTLSIdentityIsAPrincipal checks client certificates: one from the
// client CA naming a listed identity is that principal (no token needed);
// one from an unknown CA is refused at the handshake and touches nothing;
// a caller without a certificate still reaches the probes, and is
// unauthenticated on the API.
func TestMTLSIdentityIsAPrincipal(t *testing.T) {
	t.Parallel()
	serverCA, clientCA, rogueCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "rogue CA")
	certFile, keyFile, _ := tlsFiles(t, serverCA)
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	replaceFile(t, caFile, clientCA.pem)
	const identity = "spiffe://cluster.local/ns/ml/sa/worker"
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile(`  - name: ml-worker
    mtls_identities: ["`+identity+`"]
    grants: [{org: acme, project: ml, domain: "*", role: write}]
`)), "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", caFile)

	cert := func(ca *testCA) *tls.Certificate {
		c, k, _ := ca.issue(t, identity)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	put := func(c *http.Client, grpc bool, project string) error {
		opt := connect.WithProtoJSON()
		if grpc {
			opt = connect.WithGRPC()
		}
		_, err := cachev1connect.NewCacheServiceClient(c, s.url, opt).Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
			Scope: acme(project), Key: "k", Output: uriOutput("s3://b/k"),
		}))
		return err
	}
	good := cert(clientCA)
	for _, h2 := range []bool{false, true} {
		if err := put(tlsClient(t, serverCA, good, h2), h2, "ml"); err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Errorf("h2=%v: Put with a client certificate of the client CA: %v", h2, err)
		}
		if err := put(tlsClient(t, serverCA, good, h2), h2, "web"); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("h2=%v: Put outside the certificate's grant: %v, want permission_denied", h2, err)
		}
		if err := put(tlsClient(t, serverCA, cert(rogueCA), h2), h2, "ml"); err == nil || connect.CodeOf(err) == connect.CodePermissionDenied {
			t.Errorf("h2=%v: Put with a certificate of an unknown CA: %v, want a failed handshake", h2, err)
		}
		if err := put(tlsClient(t, serverCA, nil, h2), h2, "ml"); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("h2=%v: Put without a certificate: %v, want unauthenticated", h2, err)
		}
	}
	res, err := tlsClient(t, serverCA, nil, false).Get(s.url + "/readyz")
	if err != nil {
		t.Fatalf("/readyz without a client certificate: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("/readyz without a client certificate: %d", res.StatusCode)
	}
	var rows int
	if err := s.db.QueryRow(callCtx(t), `SELECT count(*) FROM cache_entries`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("%d entries stored, want the one Put of the known certificate", rows)
	}
}
