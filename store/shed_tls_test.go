package store

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/internal/embeddedpg"
)

// TestChannelBindingHoldsOverTLS connects the store to a PostgreSQL that
// serves TLS and SCRAM on 127.0.0.1, with channel_binding=require: pgx
// binds SCRAM to the TLS channel only when the connection it holds is the
// *tls.Conn itself, so watching connections for large messages must not
// wrap it (it did, and no TLS connection could then bind). A large entry
// is written and read over it and shed as without TLS.
func TestChannelBindingHoldsOverTLS(t *testing.T) {
	t.Parallel()
	if ln, err := net.Listen("tcp", "127.0.0.1:5432"); err != nil {
		t.Fatalf("this test's PostgreSQL listens on 127.0.0.1:5432, which is taken: %v", err)
	} else {
		_ = ln.Close()
	}
	dir, err := os.MkdirTemp("", "cacheservice-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it
		t.Fatal(err)
	}
	// Files the cluster reads, in its directory, which Start gives to the
	// account it runs as (a key must be its owner's alone).
	conf := filepath.Join(dir, "conf")
	if err := os.Mkdir(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := selfSigned(t)
	hba := "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
	for name, data := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM, "pg_hba.conf": []byte(hba)} {
		if err := os.WriteFile(filepath.Join(conf, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg, err := embeddedpg.Start(ctx, embeddedpg.Config{Dir: dir, Settings: map[string]string{
		"listen_addresses": "127.0.0.1",
		"ssl":              "on",
		"ssl_cert_file":    filepath.Join(conf, "server.crt"),
		"ssl_key_file":     filepath.Join(conf, "server.key"),
		"hba_file":         filepath.Join(conf, "pg_hba.conf"),
	}})
	if err != nil {
		t.Fatalf("start PostgreSQL with TLS: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	admin, err := pgx.Connect(ctx, pg.ConnString("cacheservice"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE ROLE scram LOGIN PASSWORD 'a-password'; GRANT ALL ON SCHEMA public TO scram"); err != nil {
		t.Fatal(err)
	}

	url := "postgres://scram:a-password@127.0.0.1:5432/cacheservice?sslmode=require&channel_binding=require"
	if err := Migrate(ctx, url); err != nil {
		t.Fatalf("migrate over TLS with channel binding: %v", err)
	}
	s := openStore(t, Config{URL: url, MaxConns: 1, Timeout: 30 * time.Second})
	id := ID{"o", "p", "d", "large"}
	large := bytes.Repeat([]byte{'x'}, 1<<20)
	if err := s.PutEntry(ctx, Entry{ID: id, Inline: large}, Replace{}); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	e, err := s.GetEntry(ctx, id)
	if err != nil || !bytes.Equal(e.Inline, large) {
		t.Fatalf("get over TLS: %d bytes, %v", len(e.Inline), err)
	}
	waitIdle(t, s)
	if n := s.shed.Load(); n != 2 {
		t.Errorf("%d sheds over TLS after a large Put and Get, want 2", n)
	}
}

// selfSigned returns a certificate for 127.0.0.1 and its key, as PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
