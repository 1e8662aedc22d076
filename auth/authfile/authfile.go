// Package authfile reads the auth file: the principals, what recognises each
// (a token's SHA-256, networks, mTLS and OIDC identities) and their grants
// of a role on orgs, projects and domains. It parses strictly and answers
// lookups without allocating; it knows nothing of HTTP, RPCs or how a
// credential is verified (package auth does that, and documents the format).
package authfile

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Scope is what a request touches: an org, a project and a domain. An empty
// project or domain means every one of them (a bulk filter that names only
// the org), which only a "*" grant covers.
type Scope struct {
	Org, Project, Domain string
}

// Principal is a caller as the auth file names it, with its grants.
type Principal struct {
	// Name is the principal's name in the auth file; it appears in logs and
	// in the audit line, never a credential.
	Name string
	// grantsByOrg keeps each org's grants together so that a check is one map
	// lookup on a string the request already holds, then a short scan: no
	// allocation on the hot path.
	grantsByOrg map[string][]grant
}

type grant struct {
	project, domain string // "*" matches every one
	role            Role
}

// Allows reports whether one of the principal's grants gives at least role
// on scope.
func (p *Principal) Allows(s Scope, role Role) bool {
	if p == nil || s.Org == "" {
		return false
	}
	for _, g := range p.grantsByOrg[s.Org] {
		if g.role >= role && matches(g.project, s.Project) && matches(g.domain, s.Domain) {
			return true
		}
	}
	return false
}

// matches reports whether a grant's project or domain covers the request's.
// An empty request value means "all of them" and needs the wildcard.
func matches(granted, requested string) bool {
	return granted == "*" || (requested != "" && granted == requested)
}

// File is one parsed auth file, never changed after parsing: a reload
// builds a new one and swaps the pointer.
type File struct {
	principals []*Principal
	tokens     []tokenPrincipal
	mtls       map[string]*Principal
	oidc       map[string]*Principal
	networks   []networkPrincipal // most specific prefix first
}

type tokenPrincipal struct {
	words     [4]uint64 // the token's SHA-256
	principal *Principal
}

type networkPrincipal struct {
	prefix    netip.Prefix
	principal *Principal
}

// ByTokenHash returns the principal whose token has this SHA-256. Every
// entry is compared, without branching on the bytes, so how long it takes
// says nothing about which hash (or how much of one) matched. A word-wise
// XOR keeps each comparison to a few nanoseconds, so even a few hundred
// token principals stay well under a microsecond.
func (p *File) ByTokenHash(sum *[32]byte) *Principal {
	w := hashWords(sum)
	found := -1
	for i := range p.tokens {
		t := &p.tokens[i].words
		diff := (w[0] ^ t[0]) | (w[1] ^ t[1]) | (w[2] ^ t[2]) | (w[3] ^ t[3])
		// 1 when diff is zero, else 0, computed without a branch.
		eq := int(((diff | -diff) >> 63) ^ 1)
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return nil
	}
	return p.tokens[found].principal
}

func hashWords(sum *[32]byte) [4]uint64 {
	return [4]uint64{
		binary.LittleEndian.Uint64(sum[0:]), binary.LittleEndian.Uint64(sum[8:]),
		binary.LittleEndian.Uint64(sum[16:]), binary.LittleEndian.Uint64(sum[24:]),
	}
}

// ByAddr returns the principal whose network holds addr, the most specific
// network winning.
func (p *File) ByAddr(addr netip.Addr) *Principal {
	addr = addr.Unmap()
	for _, n := range p.networks {
		if n.prefix.Contains(addr) {
			return n.principal
		}
	}
	return nil
}

// ByMTLSIdentity returns the principal that lists a certificate identity (a
// URI SAN or a subject CN) in mtls_identities.
func (p *File) ByMTLSIdentity(id string) *Principal {
	if id == "" {
		return nil
	}
	return p.mtls[id]
}

// ByOIDCIdentity returns the principal that lists a JWT claim value in
// oidc_identities.
func (p *File) ByOIDCIdentity(id string) *Principal {
	if id == "" {
		return nil
	}
	return p.oidc[id]
}

// Principals is how many principals the file lists.
func (p *File) Principals() int { return len(p.principals) }

// The auth file's shape. Field names are the YAML keys; unknown keys are
// refused so that a typo ("grant:") cannot silently grant nothing, or more.
type fileDoc struct {
	Principals []filePrincipal `yaml:"principals"`
}

type filePrincipal struct {
	Name           string      `yaml:"name"`
	TokenSHA256    string      `yaml:"token_sha256"`
	Networks       []string    `yaml:"networks"`
	MTLSIdentities []string    `yaml:"mtls_identities"`
	OIDCIdentities []string    `yaml:"oidc_identities"`
	Grants         []fileGrant `yaml:"grants"`
}

type fileGrant struct {
	Org     string `yaml:"org"`
	Project string `yaml:"project"`
	Domain  string `yaml:"domain"`
	Role    string `yaml:"role"`
}

// Parse reads an auth file strictly: yaml's own pass refuses unknown fields
// and wrong types, with their lines; a second pass over the node tree finds
// the line of each value that our checks refuse. The error, one line, names
// the first problem's line and field and never echoes a token_sha256 value.
func Parse(data []byte) (*File, error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("auth file is empty")
		}
		return nil, fmt.Errorf("auth file: %s", yamlMessage(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("auth file: holds more than one YAML document")
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("auth file: %s", yamlMessage(err))
	}
	if len(doc.Principals) == 0 {
		// An empty list is far more likely a truncated or mistaken file than a
		// wish to lock everyone out; refusing it keeps the previous file.
		return nil, errors.New("auth file: principals: none listed")
	}

	p := &File{mtls: map[string]*Principal{}, oidc: map[string]*Principal{}}
	names := map[string]bool{}
	tokens := map[[32]byte]string{}
	networks := map[netip.Prefix]string{}
	for i, fp := range doc.Principals {
		fail := func(path []any, format string, args ...any) error {
			full := append([]any{"principals", i}, path...)
			who := fmt.Sprintf("principals[%d]", i)
			if fp.Name != "" {
				who += fmt.Sprintf(" (%s)", fp.Name)
			}
			return fmt.Errorf("auth file: line %d: %s %s: %s", lineOf(&root, full...), who, fieldName(path), fmt.Sprintf(format, args...))
		}
		if strings.TrimSpace(fp.Name) == "" {
			return nil, fail([]any{"name"}, "required")
		}
		if names[fp.Name] {
			return nil, fail([]any{"name"}, "%q is used by another principal", fp.Name)
		}
		names[fp.Name] = true
		pr := &Principal{Name: fp.Name, grantsByOrg: map[string][]grant{}}

		if fp.TokenSHA256 != "" {
			// Never echo the value: someone may have pasted the token itself.
			raw, err := hex.DecodeString(fp.TokenSHA256)
			if err != nil || len(raw) != 32 {
				return nil, fail([]any{"token_sha256"}, "must be 64 hex digits, the SHA-256 of the token (got %d characters)", len(fp.TokenSHA256))
			}
			sum := [32]byte(raw)
			if other, dup := tokens[sum]; dup {
				return nil, fail([]any{"token_sha256"}, "same token as principal %q", other)
			}
			tokens[sum] = fp.Name
			p.tokens = append(p.tokens, tokenPrincipal{words: hashWords(&sum), principal: pr})
		}
		for j, cidr := range fp.Networks {
			prefix, err := netip.ParsePrefix(strings.TrimSpace(cidr))
			if err != nil {
				return nil, fail([]any{"networks", j}, "%q is not a CIDR such as 10.42.0.0/16", cidr)
			}
			if prefix.Masked() != prefix {
				return nil, fail([]any{"networks", j}, "%q has host bits set; did you mean %s?", cidr, prefix.Masked())
			}
			if other, dup := networks[prefix]; dup {
				return nil, fail([]any{"networks", j}, "%s is also listed by principal %q", prefix, other)
			}
			networks[prefix] = fp.Name
			p.networks = append(p.networks, networkPrincipal{prefix: prefix, principal: pr})
		}
		for _, ids := range []struct {
			key  string
			list []string
			into map[string]*Principal
		}{{"mtls_identities", fp.MTLSIdentities, p.mtls}, {"oidc_identities", fp.OIDCIdentities, p.oidc}} {
			for j, id := range ids.list {
				if id == "" {
					return nil, fail([]any{ids.key, j}, "empty identity")
				}
				if other, dup := ids.into[id]; dup {
					return nil, fail([]any{ids.key, j}, "%q is also listed by principal %q", id, other.Name)
				}
				ids.into[id] = pr
			}
		}
		if fp.TokenSHA256 == "" && len(fp.Networks) == 0 && len(fp.MTLSIdentities) == 0 && len(fp.OIDCIdentities) == 0 {
			return nil, fail(nil, "names no way to recognise it: set token_sha256, networks, mtls_identities or oidc_identities")
		}
		for j, fg := range fp.Grants {
			at := func(field string) []any { return []any{"grants", j, field} }
			switch {
			case fg.Org == "":
				return nil, fail(at("org"), "required")
			case fg.Org == "*":
				return nil, fail(at("org"), "must name one org (\"*\" is allowed for project and domain only)")
			case fg.Project == "":
				return nil, fail(at("project"), "required (\"*\" for every project)")
			case fg.Domain == "":
				return nil, fail(at("domain"), "required (\"*\" for every domain)")
			}
			role, err := parseRole(fg.Role)
			if err != nil {
				return nil, fail(at("role"), "%v", err)
			}
			pr.grantsByOrg[fg.Org] = append(pr.grantsByOrg[fg.Org], grant{project: fg.Project, domain: fg.Domain, role: role})
		}
		p.principals = append(p.principals, pr)
	}
	slices.SortStableFunc(p.networks, func(a, b networkPrincipal) int {
		return cmp.Compare(b.prefix.Bits(), a.prefix.Bits())
	})
	return p, nil
}

// yamlMessage flattens yaml's multi-line error into one line.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// fieldName spells a path below a principal as the file does:
// grants[0].role.
func fieldName(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch v := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(v)
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		}
	}
	if b.Len() == 0 {
		return "entry"
	}
	return b.String()
}

// lineOf follows path (map keys and list indexes) from the document root and
// returns the line of the deepest node it reaches.
func lineOf(root *yaml.Node, path ...any) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch v := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for k := 0; k+1 < len(n.Content); k += 2 {
					if n.Content[k].Value == v {
						next = n.Content[k+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && v < len(n.Content) {
				next = n.Content[v]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}
