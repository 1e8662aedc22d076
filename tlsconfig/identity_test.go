package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/cacheservice/cacheservice/tlsconfig"
)

// TestIdentity checks the identity taken from a connection state: the first URI SAN, else the
// CN, and nothing from a certificate that was not verified.
func TestIdentity(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "identity CA")
	parse := func(l leaf) *x509.Certificate {
		block, _ := pem.Decode(l.certPEM)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c, ca.cert}}}
	}
	spiffe := parse(ca.clientCert(t, "cn-ignored", "spiffe://example.org/ns/a/sa/b", "spiffe://example.org/second"))
	cn := parse(ca.clientCert(t, "ci-worker"))
	nobody := parse(ca.clientCert(t, ""))

	for _, tc := range []struct {
		name   string
		state  *tls.ConnectionState
		want   string
		wantOK bool
	}{
		{"nil state (plain HTTP)", nil, "", false},
		{"no certificate", &tls.ConnectionState{}, "", false},
		{"URI SAN wins over CN", verified(spiffe), "spiffe://example.org/ns/a/sa/b", true},
		{"CN without URI SAN", verified(cn), "ci-worker", true},
		{"neither", verified(nobody), "", false},
		{"presented but not verified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cn}}, "", false},
		{"verified chain of another certificate", &tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{nobody},
			VerifiedChains:   [][]*x509.Certificate{{cn, ca.cert}},
		}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tlsconfig.Identity(tc.state)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Identity = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
