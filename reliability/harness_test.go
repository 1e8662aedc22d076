package reliability

import (
	"bytes"
	"context"
	endian "encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cacheservice/cacheservice/auth"
	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
	"github.com/cacheservice/cacheservice/store"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m, store.Migrate)
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// maxRequestBytes is the request limit the server binary applies by default;
// the in-process server applies the same.
const maxRequestBytes = service.DefaultMaxRequestBytes

// testBundle is one in-process server on loopback over a fresh database.
type testBundle struct {
	baseURL string
	store   *store.Store
	pool    *pgxpool.Pool // the server's pool, for its statistics
	admin   *pgxpool.Pool // the test's own connections, for inspecting the database
	dbName  string
	http1   *http.Client // HTTP/1.1: a cancelled call closes its connection
	http2   *http.Client // unencrypted HTTP/2: a cancelled call resets its stream
	logs    *logRecorder
}

// setup starts the server's HTTP edge, as cmd/cacheservice serves it (the
// request size limit included), on 127.0.0.1 over a new database.
// storeOpts change the store's configuration.
func setup(t testing.TB, cfg manager.Config, storeOpts ...func(*store.Config)) *testBundle {
	t.Helper()
	return setupEdge(t, cfg, nil, storeOpts...)
}

// setupEdge is setup with authentication by a when a is not nil.
func setupEdge(t testing.TB, cfg manager.Config, a *auth.Authenticator, storeOpts ...func(*store.Config)) *testBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	sc := store.Config{URL: url, MaxConns: 16, Timeout: 10 * time.Second}
	for _, opt := range storeOpts {
		opt(&sc)
	}
	st, err := store.Open(t.Context(), sc)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { closeBounded(t, "server's pool", st.Close) })
	admin, err := pgxpool.New(t.Context(), sc.URL)
	if err != nil {
		t.Fatalf("open admin pool: %v", err)
	}
	t.Cleanup(admin.Close)
	logs := &logRecorder{}
	m := manager.New(st, cfg, slog.New(logs))
	edge := service.NewEdge(m, service.Options{Logger: slog.New(logs), MaxRequestBytes: maxRequestBytes, Auth: a})
	baseURL := serveEdge(t, edge, slog.New(logs))

	b := &testBundle{
		baseURL: baseURL,
		store:   st,
		pool:    st.Pool(),
		admin:   admin,
		dbName:  st.Pool().Config().ConnConfig.Database,
		http1:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		http2:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: h2cOnly()}},
		logs:    logs,
	}
	t.Cleanup(func() {
		b.http1.CloseIdleConnections()
		b.http2.CloseIdleConnections()
	})
	return b
}

// serveEdge serves edge on a loopback port as cmd/cacheservice serves it
// without TLS: gRPC with grpc-go, every other protocol with Go's HTTP
// server, split by each connection's first request. It returns the base
// URL.
func serveEdge(t testing.TB, edge http.Handler, logger *slog.Logger) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// Cleanup waits for the handlers still running, as httptest's Close
	// does, so that none outlives its test (and its database).
	var running atomic.Int64
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		running.Add(1)
		defer running.Add(-1)
		edge.ServeHTTP(w, r)
	})
	other, grpcConns := service.SplitGRPC(ln)
	hs := &http.Server{Handler: counted, Protocols: protocols(), ReadHeaderTimeout: 5 * time.Second}
	gs := service.NewGRPCServer(counted, service.GRPCOptions{MaxRequestBytes: maxRequestBytes, Logger: logger})
	go func() { _ = gs.Serve(grpcConns) }()
	go func() { _ = hs.Serve(other) }()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = hs.Close()
		gs.Stop()
		for deadline := time.Now().Add(time.Minute); running.Load() > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d handlers still running a minute after the server closed", running.Load())
				return
			}
		}
	})
	return "http://" + ln.Addr().String()
}

// closeBounded runs closeFn, giving up after 10s: a pool waits for every
// acquired connection, so a leaked one would hang the cleanup for ever.
func closeBounded(t testing.TB, what string, closeFn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeFn()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("closing the %s took over 10s: a connection is still acquired (leaked)", what)
	}
}

func protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// connectClient speaks the Connect protocol with JSON over HTTP/1.1.
func (b *testBundle) connectClient() cachev1connect.CacheServiceClient {
	return cachev1connect.NewCacheServiceClient(b.http1, b.baseURL, connect.WithProtoJSON())
}

// grpcClient speaks gRPC over unencrypted HTTP/2.
func (b *testBundle) grpcClient() cachev1connect.CacheServiceClient {
	return cachev1connect.NewCacheServiceClient(b.http2, b.baseURL, connect.WithGRPC())
}

// clients are the protocols every structured case runs over.
func (b *testBundle) clients() map[string]cachev1connect.CacheServiceClient {
	return map[string]cachev1connect.CacheServiceClient{"connect+json": b.connectClient(), "grpc": b.grpcClient()}
}

// rawResponse is what came back from a hand-made HTTP request.
type rawResponse struct {
	status int
	code   connect.Code // ok for 200
	msg    string       // the error message
	body   []byte       // the success body
}

// post sends body to procedure (its full name, such as
// /cacheservice.v1.CacheService/Get) with the Connect unary protocol and
// decodes the error body, if any.
func (b *testBundle) post(ctx context.Context, t testing.TB, procedure, contentType string, body io.Reader, header http.Header) rawResponse {
	t.Helper()
	path := "/" + cachev1connect.CacheServiceName + "/" + procedure
	if strings.HasPrefix(procedure, "/") { // a full path, as for Flyte's API
		path = procedure
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.baseURL+path, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.http1.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		t.Fatalf("read response of %s: %v", procedure, err)
	}
	return decodeRaw(t, resp.StatusCode, data)
}

// postGRPC sends msg, a binary message, to procedure with the gRPC
// protocol over unencrypted HTTP/2 (served by grpc-go), and reads the
// answer as post does.
func (b *testBundle) postGRPC(ctx context.Context, t testing.TB, procedure string, msg []byte, header http.Header) rawResponse {
	t.Helper()
	envelope := endian.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.baseURL+procedure, bytes.NewReader(append(envelope, msg...)))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.http2.Do(req)
	if err != nil {
		t.Fatalf("gRPC %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		t.Fatalf("read response of %s: %v", procedure, err)
	}
	status := resp.Trailer.Get("Grpc-Status")
	message := resp.Trailer.Get("Grpc-Message")
	if status == "" { // trailers only: the status came with the headers
		status, message = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	code, err := strconv.Atoi(status)
	if err != nil || code < 0 || code > 16 {
		t.Fatalf("gRPC %s: status %q is not a code (HTTP %d)", procedure, status, resp.StatusCode)
	}
	r := rawResponse{status: resp.StatusCode, code: connect.Code(code)}
	if code == 0 {
		if len(data) < 5 || data[0] != 0 || int(endian.BigEndian.Uint32(data[1:5])) != len(data)-5 {
			t.Fatalf("gRPC %s: a success whose body is not one uncompressed message: %q", procedure, data)
		}
		r.body = data[5:]
		return r
	}
	if len(data) > 0 {
		t.Fatalf("gRPC %s: an error (%v) with a body: %q", procedure, r.code, data)
	}
	if r.msg, err = url.PathUnescape(message); err != nil {
		t.Fatalf("gRPC %s: grpc-message %q is not percent-encoded: %v", procedure, message, err)
	}
	return r
}

// decodeRaw reads a Connect unary response: 200 with the message, or an
// error status with a JSON error body.
func decodeRaw(t testing.TB, status int, data []byte) rawResponse {
	t.Helper()
	r := rawResponse{status: status}
	if status == http.StatusOK {
		r.body = data
		return r
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("status %d with a body that is not a Connect error: %v: %q", status, err, data)
	}
	if err := r.code.UnmarshalText([]byte(e.Code)); err != nil {
		t.Fatalf("status %d with unknown code %q (%q)", status, e.Code, e.Message)
	}
	r.msg = e.Message
	return r
}

// leakMarkers are strings that no client may ever see in an error message:
// SQL, driver and connection details, Go internals.
var leakMarkers = []string{
	"SQLSTATE", "pgx", "pgconn", "postgres", "SELECT", "INSERT", "UPDATE ", "DELETE FROM",
	"cache_entries", "reservations", "host=", "dbname", "/tmp/", ".s.PGSQL", "goroutine", ".go:", "panic",
}

// assertNoLeak fails when msg carries internal detail.
func assertNoLeak(t testing.TB, msg string) {
	t.Helper()
	for _, m := range leakMarkers {
		if strings.Contains(msg, m) {
			t.Fatalf("error message leaks %q: %q", m, msg)
		}
	}
}

// logRecorder is a slog handler that keeps the records at warning and above,
// so a test can prove the server logged no internal error.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var buf bytes.Buffer
	buf.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		buf.WriteString(" " + a.String())
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, buf.String())
	return nil
}

// errors returns the records at level error.
func (l *logRecorder) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if strings.HasPrefix(r, "ERROR") {
			out = append(out, r)
		}
	}
	return out
}

// assertNoServerErrors fails if the server logged an internal error.
func (b *testBundle) assertNoServerErrors(t testing.TB) {
	t.Helper()
	if errs := b.logs.errors(); len(errs) > 0 {
		t.Fatalf("server logged %d errors, first: %s", len(errs), errs[0])
	}
}

// scope is the scope most cases use.
func scope() *cachev1.Scope {
	return &cachev1.Scope{Org: "org", Project: "project", Domain: "domain"}
}

// counts returns how many entries and reservations the database holds.
func (b *testBundle) counts(t testing.TB) (entries, reservations int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM cache_entries), (SELECT count(*) FROM reservations)`).
		Scan(&entries, &reservations)
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return entries, reservations
}

// assertEmpty fails unless nothing at all is stored.
func (b *testBundle) assertEmpty(t testing.TB) {
	t.Helper()
	if e, r := b.counts(t); e != 0 || r != 0 {
		t.Fatalf("database holds %d entries and %d reservations, want none", e, r)
	}
}

// asConnectError is errors.As for *connect.Error.
func asConnectError(err error, target **connect.Error) bool { return errors.As(err, target) }
