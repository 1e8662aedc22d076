package tlsconfig_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/cacheservice/cacheservice/tlsconfig"
)

// callTimeout bounds every call and handshake a test makes.
const callTimeout = 5 * time.Second

// server is an https server on 127.0.0.1 built from a Reloader, as the main port will be.
type server struct {
	addr string
	url  string
	// served counts requests that reached the handler, so a refused handshake can be told from
	// a refused request.
	served atomic.Int64
}

// startServer serves, over rel's config: /whoami (the caller's certificate identity, or "-"),
// anything else answers the protocol, plus the gRPC health service.
func startServer(t *testing.T, rel *tlsconfig.Reloader) *server {
	t.Helper()
	s := &server{}
	mux := http.NewServeMux()
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		s.served.Add(1)
		id, ok := tlsconfig.Identity(r.TLS)
		if !ok {
			id = "-"
		}
		io.WriteString(w, id)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.served.Add(1)
		io.WriteString(w, r.Proto)
	})
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The protocols cmd/cacheservice sets (HTTP/1.1 and cleartext HTTP/2), plus HTTP/2 over TLS,
	// which a server with its Protocols set should add: the handshake offers h2 regardless.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		TLSConfig:         rel.TLSConfig(),
		ReadHeaderTimeout: callTimeout,
		ErrorLog:          log.New(testWriter{t}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	s.addr = ln.Addr().String()
	s.url = "https://" + s.addr
	return s
}

// client returns an HTTP client trusting roots that speaks only the given protocol, presenting
// cert when it is not nil.
func client(roots *x509.CertPool, http2 bool, cert *leaf) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP1(!http2)
	protocols.SetHTTP2(http2)
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		pair, err := tls.X509KeyPair(cert.certPEM, cert.keyPEM)
		if err != nil {
			panic(err)
		}
		// Always present it: with Certificates, Go's client withholds a certificate whose issuer
		// is not among the CAs the server asks for, and an attacker would not be so polite.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return &http.Client{
		Timeout:   callTimeout,
		Transport: &http.Transport{TLSClientConfig: cfg, Protocols: &protocols},
	}
}

// servedSerial opens a new connection and returns the serial of the certificate the server
// presents on it.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: callTimeout}, Config: &tls.Config{RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// waitServed waits until new connections see the certificate with serial want.
func waitServed(t *testing.T, addr string, roots *x509.CertPool, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := servedSerial(t, addr, roots)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see serial %d, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newReloader(t *testing.T, cfg tlsconfig.Config) *tlsconfig.Reloader {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rel, err := tlsconfig.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// watch starts rel's watch and stops it, waiting, at cleanup.
func watch(t *testing.T, rel *tlsconfig.Reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, err := rel.Watch(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// streamer calls the server in a loop over one client until stopped, recording every failure and
// every connection it used.
type streamer struct {
	name  string
	call  func(ctx context.Context) error
	calls atomic.Int64
	mu    sync.Mutex
	errs  []error
	conns map[string]bool // local addresses of the connections used
}

func (s *streamer) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		s.mu.Lock()
		s.conns[info.Conn.LocalAddr().String()] = true
		s.mu.Unlock()
	}}
	// Bounded in count as well as by stop, so a stuck rotation cannot spin forever.
	for i := 0; i < 200_000; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), callTimeout)
		err := s.call(ctx)
		cancel()
		s.calls.Add(1)
		if err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.mu.Unlock()
		}
	}
}

func getProto(c *http.Client, url, want string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK || string(body) != want || res.Proto != want {
			return fmt.Errorf("status %d, proto %s, body %q; want 200 over %s", res.StatusCode, res.Proto, body, want)
		}
		return nil
	}
}

// TestRotationBySymlinkSwapFailsNoCall rotates the certificate three times the way the kubelet
// updates a Secret while HTTP/2, HTTP/1.1 and gRPC clients call without pause: no call fails,
// each client keeps its one connection, and every new connection sees the new certificate.
func TestRotationBySymlinkSwapFailsNoCall(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "rotation CA")
	first := ca.serverCert(t)
	secret := newSecretDir(t, map[string][]byte{"tls.crt": first.certPEM, "tls.key": first.keyPEM, "ca.crt": ca.pem})
	rel := newReloader(t, tlsconfig.Config{
		CertFile: secret.path("tls.crt"),
		KeyFile:  secret.path("tls.key"),
	})
	watch(t, rel)
	srv := startServer(t, rel)
	if got := servedSerial(t, srv.addr, ca.pool()); got != first.serial {
		t.Fatalf("served serial %d, want %d", got, first.serial)
	}

	h2, h1 := client(ca.pool(), true, nil), client(ca.pool(), false, nil)
	health := grpchealth.NewClient(client(ca.pool(), true, nil), srv.url, connect.WithGRPC())
	streamers := []*streamer{
		{name: "HTTP/2", call: getProto(h2, srv.url+"/", "HTTP/2.0")},
		{name: "HTTP/1.1", call: getProto(h1, srv.url+"/", "HTTP/1.1")},
		{name: "gRPC", call: func(ctx context.Context) error {
			res, err := health.Check(ctx, &grpchealth.CheckRequest{})
			if err == nil && res.Status != grpchealth.StatusServing {
				err = fmt.Errorf("health status %v", res.Status)
			}
			return err
		}},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range streamers {
		s.conns = map[string]bool{}
		wg.Add(1)
		go s.run(stop, &wg)
	}
	// Each client is under way before the first rotation.
	for _, s := range streamers {
		for deadline := time.Now().Add(callTimeout); s.calls.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}

	const rotations = 3
	for i := range rotations {
		next := ca.serverCert(t)
		before := make([]int64, len(streamers))
		for j, s := range streamers {
			before[j] = s.calls.Load()
		}
		secret.update(t, map[string][]byte{"tls.crt": next.certPEM, "tls.key": next.keyPEM, "ca.crt": ca.pem})
		waitServed(t, srv.addr, ca.pool(), next.serial)
		// Calls went on across the swap on the connections opened before it.
		for j, s := range streamers {
			for deadline := time.Now().Add(callTimeout); s.calls.Load() <= before[j] && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			if s.calls.Load() <= before[j] {
				t.Errorf("rotation %d: %s client made no call after it", i+1, s.name)
			}
		}
	}
	close(stop)
	wg.Wait()

	for _, s := range streamers {
		t.Logf("%s: %d calls over %d connection(s)", s.name, s.calls.Load(), len(s.conns))
		if len(s.errs) > 0 {
			t.Errorf("%s: %d of %d calls failed, first: %v", s.name, len(s.errs), s.calls.Load(), s.errs[0])
		}
		if len(s.conns) != 1 {
			t.Errorf("%s: used %d connections, want the one it opened first (a rotation dropped it?)", s.name, len(s.conns))
		}
	}
	if st := rel.State(); st.Reloads != 1+rotations || st.Failures != 0 {
		t.Errorf("state = %+v, want %d reloads and no failure", st, 1+rotations)
	}
}

// TestBrokenUpdateKeepsPreviousCertificate swaps in a certificate with another certificate's key,
// then a certificate file that is not PEM: the previous certificate stays served and each failure
// is counted; a good pair afterwards is served.
func TestBrokenUpdateKeepsPreviousCertificate(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "broken update CA")
	good, other := ca.serverCert(t), ca.serverCert(t)
	secret := newSecretDir(t, map[string][]byte{"tls.crt": good.certPEM, "tls.key": good.keyPEM})
	rel := newReloader(t, tlsconfig.Config{CertFile: secret.path("tls.crt"), KeyFile: secret.path("tls.key")})
	watch(t, rel)
	srv := startServer(t, rel)

	broken := []map[string][]byte{
		{"tls.crt": other.certPEM, "tls.key": good.keyPEM},
		{"tls.crt": []byte("not a certificate"), "tls.key": good.keyPEM},
	}
	for i, files := range broken {
		secret.update(t, files)
		for deadline := time.Now().Add(10 * time.Second); rel.State().Failures < uint64(i+1); {
			if time.Now().After(deadline) {
				t.Fatalf("update %d: no failed reload counted: %+v", i+1, rel.State())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := servedSerial(t, srv.addr, ca.pool()); got != good.serial {
			t.Fatalf("update %d: served serial %d after a broken update, want the previous %d", i+1, got, good.serial)
		}
	}
	if err := rel.Reload(); err == nil {
		t.Error("Reload of a broken pair returned no error")
	} else if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "not a certificate") {
		t.Errorf("Reload error quotes the files' contents: %v", err)
	}

	fixed := ca.serverCert(t)
	secret.update(t, map[string][]byte{"tls.crt": fixed.certPEM, "tls.key": fixed.keyPEM})
	waitServed(t, srv.addr, ca.pool(), fixed.serial)
	if st := rel.State(); st.Reloads != 2 || st.Failures != 3 || st.Serial != fmt.Sprintf("%x", fixed.serial) {
		t.Errorf("state = %+v, want 2 reloads, 3 failures (2 watched, 1 Reload), serial %x", st, fixed.serial)
	}
}

// TestReloadReadsFilesReplacedInPlace is the SIGHUP path: no watch, plain files overwritten in
// place, and Reload serves the new pair; a Reload with nothing changed is not counted.
func TestReloadReadsFilesReplacedInPlace(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "reload CA")
	first, second := ca.serverCert(t), ca.serverCert(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writeFile(t, certFile, first.certPEM)
	writeFile(t, keyFile, first.keyPEM)
	rel := newReloader(t, tlsconfig.Config{CertFile: certFile, KeyFile: keyFile})
	srv := startServer(t, rel)

	if err := rel.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := rel.State(); st.Reloads != 1 {
		t.Errorf("Reload without change counted: %+v", st)
	}
	writeFile(t, certFile, second.certPEM)
	writeFile(t, keyFile, second.keyPEM)
	if got := servedSerial(t, srv.addr, ca.pool()); got != first.serial {
		t.Fatalf("served %d before Reload, want %d (nothing watches here)", got, first.serial)
	}
	if err := rel.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, srv.addr, ca.pool()); got != second.serial {
		t.Fatalf("served %d after Reload, want %d", got, second.serial)
	}
	if st := rel.State(); st.Reloads != 2 || st.Failures != 0 {
		t.Errorf("state = %+v, want 2 reloads", st)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNewRefusesUnusableFiles: a server must not start on files it cannot serve.
func TestNewRefusesUnusableFiles(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "new CA")
	a, b := ca.serverCert(t), ca.serverCert(t)
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	certA, keyA, keyB := file("a.crt", a.certPEM), file("a.key", a.keyPEM), file("b.key", b.keyPEM)
	for _, tc := range []struct {
		name string
		cfg  tlsconfig.Config
		want string
	}{
		{"no key file", tlsconfig.Config{CertFile: certA}, "both"},
		{"missing certificate", tlsconfig.Config{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: keyA}, "read certificate"},
		{"key of another certificate", tlsconfig.Config{CertFile: certA, KeyFile: keyB}, "a.crt"},
		{"client CA file without PEM", tlsconfig.Config{CertFile: certA, KeyFile: keyA, ClientCAFile: file("empty.pem", []byte("junk"))}, "empty.pem"},
		{"missing client CA file", tlsconfig.Config{CertFile: certA, KeyFile: keyA, ClientCAFile: filepath.Join(dir, "nope.pem")}, "client CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsconfig.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestClientCertificates checks mTLS: a caller without a certificate gets through (probes carry
// none), one with a certificate from the configured CA is identified by its URI SAN or else its
// CN, one from an unknown CA is refused before any handler runs; after the CA file rotates, the
// old CA's certificates are refused on new connections and the new CA's accepted.
func TestClientCertificates(t *testing.T) {
	t.Parallel()
	serverCA, clientCA, strangerCA := newCA(t, "server CA"), newCA(t, "client CA"), newCA(t, "stranger CA")
	srvCert := serverCA.serverCert(t)
	secret := newSecretDir(t, map[string][]byte{"tls.crt": srvCert.certPEM, "tls.key": srvCert.keyPEM, "ca.crt": clientCA.pem})
	rel := newReloader(t, tlsconfig.Config{
		CertFile:     secret.path("tls.crt"),
		KeyFile:      secret.path("tls.key"),
		ClientCAFile: secret.path("ca.crt"),
	})
	watch(t, rel)
	srv := startServer(t, rel)
	roots := serverCA.pool()

	spiffe := clientCA.clientCert(t, "worker-cn", "spiffe://cluster.local/ns/ci/sa/worker", "https://example.com/second")
	cnOnly := clientCA.clientCert(t, "ci-worker")
	nobody := clientCA.clientCert(t, "")
	stranger := strangerCA.clientCert(t, "intruder", "spiffe://cluster.local/ns/ci/sa/worker")

	for _, tc := range []struct {
		name string
		cert *leaf
		want string // identity answered; empty: the call must fail
	}{
		{"no certificate", nil, "-"},
		{"URI SAN first", &spiffe, "spiffe://cluster.local/ns/ci/sa/worker"},
		{"common name", &cnOnly, "ci-worker"},
		{"certificate naming nobody", &nobody, "-"},
		{"unknown CA", &stranger, ""},
	} {
		for _, h2 := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/http2=%v", tc.name, h2), func(t *testing.T) {
				servedBefore := srv.served.Load()
				got, err := whoami(client(roots, h2, tc.cert), srv.url)
				switch {
				case tc.want == "" && err == nil:
					t.Errorf("call with a certificate from an unknown CA answered %q, want the handshake refused", got)
				case tc.want == "" && srv.served.Load() != servedBefore:
					// The client may see the alert or only a broken pipe, depending on timing;
					// what matters is that no request was served.
					t.Errorf("refused call %v reached the handler", err)
				case tc.want != "" && err != nil:
					t.Errorf("call failed: %v", err)
				case tc.want != "" && got != tc.want:
					t.Errorf("identity = %q, want %q", got, tc.want)
				}
			})
		}
	}

	// Rotate the client CA: new connections trust only the new one.
	newClientCA := newCA(t, "client CA 2")
	fromNew := newClientCA.clientCert(t, "new-worker")
	secret.update(t, map[string][]byte{"tls.crt": srvCert.certPEM, "tls.key": srvCert.keyPEM, "ca.crt": newClientCA.pem})
	for deadline := time.Now().Add(10 * time.Second); rel.State().Reloads < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("client CA change not reloaded: %+v", rel.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, err := whoami(client(roots, true, &fromNew), srv.url); err != nil || got != "new-worker" {
		t.Errorf("certificate of the new client CA: %q, %v; want new-worker", got, err)
	}
	if got, err := whoami(client(roots, true, &cnOnly), srv.url); err == nil {
		t.Errorf("certificate of the replaced client CA accepted as %q", got)
	}
}

// whoami calls /whoami on a new connection and returns the identity the server saw. Unknown-CA
// refusals must come from the handshake: the handler is never reached.
func whoami(c *http.Client, base string) (string, error) {
	defer c.CloseIdleConnections()
	res, err := c.Get(base + "/whoami")
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", res.StatusCode, body)
	}
	return string(body), nil
}

// TestUnknownCAIsRefusedAtHandshake makes sure the refusal happens before any request is served.
func TestUnknownCAIsRefusedAtHandshake(t *testing.T) {
	t.Parallel()
	serverCA, clientCA, strangerCA := newCA(t, "server CA"), newCA(t, "client CA"), newCA(t, "stranger CA")
	srvCert := serverCA.serverCert(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "tls.crt"), srvCert.certPEM)
	writeFile(t, filepath.Join(dir, "tls.key"), srvCert.keyPEM)
	writeFile(t, filepath.Join(dir, "ca.crt"), clientCA.pem)
	rel := newReloader(t, tlsconfig.Config{
		CertFile:     filepath.Join(dir, "tls.crt"),
		KeyFile:      filepath.Join(dir, "tls.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"),
	})
	srv := startServer(t, rel)
	stranger := strangerCA.clientCert(t, "intruder")
	for _, h2 := range []bool{true, false} {
		if _, err := whoami(client(serverCA.pool(), h2, &stranger), srv.url); err == nil {
			t.Errorf("http2=%v: unknown CA accepted", h2)
		}
	}
	if n := srv.served.Load(); n != 0 {
		t.Errorf("%d requests reached the handler over connections with an unknown CA's certificate", n)
	}
}
