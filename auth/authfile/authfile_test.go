package authfile

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func sha(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

const token = "write-token-0123456789"

func TestParseRefusesBadFilesNamingLineAndField(t *testing.T) {
	t.Parallel()
	h := sha(token)
	cases := []struct {
		name, file string
		want       []string // every one must appear in the error
	}{
		{"empty", "", []string{"empty"}},
		{"no principals", "principals: []\n", []string{"principals: none listed"}},
		{"unknown field", "principals:\n  - name: a\n    token_sha256: " + h + "\n    grant: []\n", []string{"line 4", "grant", "not found"}},
		{"unknown top-level field", "principal:\n  - name: a\n", []string{"line 1", "principal"}},
		{"wrong type", "principals:\n  - name: [a, b]\n", []string{"line 2"}},
		{"missing name", "principals:\n  - token_sha256: " + h + "\n", []string{"line 2", "principals[0]", "name: required"}},
		{"duplicate name", "principals:\n  - name: a\n    token_sha256: " + h + "\n  - name: a\n    networks: [10.0.0.0/8]\n", []string{"line 4", "principals[1] (a) name", "used by another"}},
		{"bad hex", "principals:\n  - name: a\n    token_sha256: zz" + h[2:] + "\n", []string{"line 3", "(a) token_sha256", "64 hex digits"}},
		{"short hex", "principals:\n  - name: a\n    token_sha256: abc123\n", []string{"line 3", "64 hex digits", "got 6 characters"}},
		{"duplicate token", "principals:\n  - name: a\n    token_sha256: " + h + "\n  - name: b\n    token_sha256: " + strings.ToUpper(h) + "\n", []string{"line 5", "(b) token_sha256", `same token as principal "a"`}},
		{"bad cidr", "principals:\n  - name: a\n    networks:\n      - 10.0.0.0/8\n      - 10.1.2.300/32\n", []string{"line 5", "networks[1]", "not a CIDR"}},
		{"host bits", "principals:\n  - name: a\n    networks: [10.42.0.1/16]\n", []string{"line 3", "host bits", "10.42.0.0/16"}},
		{"duplicate network", "principals:\n  - name: a\n    networks: [10.0.0.0/8]\n  - name: b\n    networks: [10.0.0.0/8]\n", []string{"line 5", "(b) networks[0]", "also listed"}},
		{"duplicate mtls identity", "principals:\n  - name: a\n    mtls_identities: [spiffe://x/y]\n  - name: b\n    mtls_identities: [spiffe://x/y]\n", []string{"line 5", "mtls_identities[0]"}},
		{"no way to recognise", "principals:\n  - name: a\n    grants: [{org: acme, project: '*', domain: '*', role: read}]\n", []string{"line 2", "(a) entry", "no way to recognise"}},
		{"bad role", "principals:\n  - name: a\n    token_sha256: " + h + "\n    grants:\n      - {org: acme, project: '*', domain: '*', role: read}\n      - {org: acme, project: '*', domain: '*', role: owner}\n", []string{"line 6", "grants[1].role", `unknown role "owner"`}},
		{"empty org", "principals:\n  - name: a\n    token_sha256: " + h + "\n    grants:\n      - project: '*'\n        domain: '*'\n        role: read\n", []string{"line 5", "grants[0].org: required"}},
		{"wildcard org", "principals:\n  - name: a\n    token_sha256: " + h + "\n    grants: [{org: '*', project: '*', domain: '*', role: read}]\n", []string{"line 4", "grants[0].org", "one org"}},
		{"empty project", "principals:\n  - name: a\n    token_sha256: " + h + "\n    grants: [{org: acme, domain: '*', role: read}]\n", []string{"grants[0].project: required"}},
		{"two documents", "principals:\n  - name: a\n    token_sha256: " + h + "\n---\nprincipals: []\n", []string{"more than one YAML document"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(c.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseNeverEchoesTokenField(t *testing.T) {
	t.Parallel()
	// Someone pasted the token itself instead of its hash.
	_, err := Parse([]byte("principals:\n  - name: a\n    token_sha256: " + token + "\n"))
	if err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("error %v must refuse without echoing the value", err)
	}
}

func TestGrantsMatchScopeAndRole(t *testing.T) {
	t.Parallel()
	p, err := Parse([]byte(`principals:
  - name: a
    token_sha256: ` + sha(token) + `
    grants:
      - {org: acme, project: ml, domain: production, role: admin}
      - {org: acme, project: "*", domain: staging, role: write}
      - {org: acme, project: web, domain: "*", role: read}
      - {org: globex, project: "*", domain: "*", role: read}
`))
	if err != nil {
		t.Fatal(err)
	}
	pr := p.principals[0]
	cases := []struct {
		scope Scope
		role  Role
		want  bool
	}{
		{Scope{"acme", "ml", "production"}, RoleAdmin, true},
		{Scope{"acme", "ml", "development"}, RoleRead, false},
		{Scope{"acme", "any", "staging"}, RoleWrite, true},
		{Scope{"acme", "any", "staging"}, RoleAdmin, false},
		{Scope{"acme", "web", "x"}, RoleRead, true},
		{Scope{"acme", "web", "x"}, RoleWrite, false},
		{Scope{"acme", "web", "staging"}, RoleWrite, true}, // the staging grant covers it
		{Scope{"globex", "p", "d"}, RoleRead, true},
		{Scope{"globex", "p", "d"}, RoleWrite, false},
		{Scope{"initech", "p", "d"}, RoleRead, false},
		{Scope{"", "ml", "production"}, RoleRead, false},
		// A filter naming only the org (empty project, domain) needs wildcards.
		{Scope{"globex", "", ""}, RoleRead, true},
		{Scope{"acme", "", "staging"}, RoleWrite, true},
		{Scope{"acme", "ml", ""}, RoleRead, false},
		{Scope{"acme", "", ""}, RoleRead, false},
		// Case matters: ACME is another org.
		{Scope{"ACME", "ml", "production"}, RoleRead, false},
	}
	for _, c := range cases {
		if got := pr.Allows(c.scope, c.role); got != c.want {
			t.Errorf("Allows(%+v, %s) = %v, want %v", c.scope, c.role, got, c.want)
		}
	}
	var nilPrincipal *Principal
	if nilPrincipal.Allows(Scope{"acme", "ml", "production"}, RoleRead) {
		t.Error("a nil principal is allowed")
	}
}

func TestNetworksMostSpecificWins(t *testing.T) {
	t.Parallel()
	p, err := Parse([]byte(`principals:
  - name: wide
    networks: [10.0.0.0/8, "::/0"]
  - name: narrow
    networks: [10.42.0.0/16]
`))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"10.42.1.1": "narrow", "10.1.1.1": "wide", "::ffff:10.42.0.9": "narrow", "2001:db8::1": "wide", "192.0.2.1": ""} {
		got := p.ByAddr(netip.MustParseAddr(addr))
		if (got == nil && want != "") || (got != nil && got.Name != want) {
			t.Errorf("byAddr(%s) = %v, want %q", addr, got, want)
		}
	}
}

func TestLookupsFindTheirPrincipal(t *testing.T) {
	t.Parallel()
	f, err := Parse([]byte(`principals:
  - name: a
    token_sha256: ` + sha("token-a") + `
  - name: b
    token_sha256: ` + sha("token-b") + `
    mtls_identities: ["spiffe://x/b", b-cn]
  - name: c
    oidc_identities: ["system:serviceaccount:ns:c"]
`))
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]string{"token-a": "a", "token-b": "b", "token-c": ""} {
		sum := sha256.Sum256([]byte(token))
		if got := f.ByTokenHash(&sum); (got == nil) != (want == "") || (got != nil && got.Name != want) {
			t.Errorf("ByTokenHash(%s) = %v, want %q", token, got, want)
		}
	}
	// A hash one bit away from a listed one matches nothing.
	sum := sha256.Sum256([]byte("token-b"))
	sum[31] ^= 1
	if got := f.ByTokenHash(&sum); got != nil {
		t.Errorf("a near miss matched %s", got.Name)
	}
	if f.ByMTLSIdentity("spiffe://x/b").Name != "b" || f.ByMTLSIdentity("b-cn").Name != "b" || f.ByMTLSIdentity("") != nil || f.ByMTLSIdentity("spiffe://x/c") != nil {
		t.Error("ByMTLSIdentity")
	}
	if f.ByOIDCIdentity("system:serviceaccount:ns:c").Name != "c" || f.ByOIDCIdentity("b-cn") != nil {
		t.Error("ByOIDCIdentity")
	}
	if f.Principals() != 3 {
		t.Errorf("Principals() = %d", f.Principals())
	}
}
