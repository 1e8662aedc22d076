package auth

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

func TestParseRefusesBadFilesNamingLineAndField(t *testing.T) {
	t.Parallel()
	h := sha(readToken)
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
			err := Validate([]byte(c.file))
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
	err := Validate([]byte("principals:\n  - name: a\n    token_sha256: " + writeToken + "\n"))
	if err == nil || strings.Contains(err.Error(), writeToken) {
		t.Fatalf("error %v must refuse without echoing the value", err)
	}
}

func TestGrantsMatchScopeAndRole(t *testing.T) {
	t.Parallel()
	p, err := parsePolicy([]byte(`principals:
  - name: a
    token_sha256: ` + sha(readToken) + `
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
	p, err := parsePolicy([]byte(`principals:
  - name: wide
    networks: [10.0.0.0/8, "::/0"]
  - name: narrow
    networks: [10.42.0.0/16]
`))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"10.42.1.1": "narrow", "10.1.1.1": "wide", "::ffff:10.42.0.9": "narrow", "2001:db8::1": "wide", "192.0.2.1": ""} {
		got := p.byAddr(mustAddr(t, addr))
		if (got == nil && want != "") || (got != nil && got.Name != want) {
			t.Errorf("byAddr(%s) = %v, want %q", addr, got, want)
		}
	}
}

// TestEveryProcedureHasARole fails when an RPC is added to our API without a
// line in the access table.
func TestEveryProcedureHasARole(t *testing.T) {
	t.Parallel()
	services := cachev1.File_cacheservice_v1_cache_proto.Services()
	for i := range services.Len() {
		s := services.Get(i)
		for j := range s.Methods().Len() {
			proc := "/" + string(s.FullName()) + "/" + string(s.Methods().Get(j).Name())
			if _, ok := RoleOf(proc); !ok {
				t.Errorf("%s has no role in procedureRoles", proc)
			}
		}
	}
	if _, ok := RoleOf("/cacheservice.v1.CacheService/Unknown"); ok {
		t.Error("an unknown procedure has a role")
	}
	for proc, want := range map[string]Role{
		"/flyteidl2.cacheservice.v2.CacheService/Get":                    RoleRead,
		"/flyteidl2.cacheservice.v2.CacheService/Put":                    RoleWrite,
		"/flyteidl2.cacheservice.v2.CacheService/GetOrExtendReservation": RoleWrite,
		"/flyteidl2.cacheservice.v2.CacheService/ReleaseReservation":     RoleWrite,
		"/flyteidl2.cacheservice.v2.CacheService/Delete":                 RoleAdmin,
		"/cacheservice.v1.CacheService/DeleteEntries":                    RoleAdmin,
		"/cacheservice.v1.CacheService/ListEntries":                      RoleRead,
	} {
		if got, _ := RoleOf(proc); got != want {
			t.Errorf("RoleOf(%s) = %s, want %s", proc, got, want)
		}
	}
}

// flyteShapedMessages builds, at run time, messages shaped like Flyte's
// GetCacheRequest (an identifier of org, project, domain) and like our
// future DeleteEntries request (a filter), whose generated code this
// package does not import.
func flyteShapedMessages(t testing.TB) (flyteGet, deleteEntries protoreflect.MessageDescriptor) {
	t.Helper()
	str := func(name string, n int32) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String(name)}
	}
	msg := func(name string, n int32, typ string) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(typ), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String(name)}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("authtest/flyte.proto"),
		Package: proto.String("authtest"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Identifier"), Field: []*descriptorpb.FieldDescriptorProto{str("org", 1), str("project", 2), str("domain", 3)}},
			{Name: proto.String("GetCacheRequest"), Field: []*descriptorpb.FieldDescriptorProto{str("key", 1), msg("identifier", 3, ".authtest.Identifier")}},
			{Name: proto.String("EntryFilter"), Field: []*descriptorpb.FieldDescriptorProto{str("org", 1), str("project", 2), str("domain", 3), str("key_prefix", 4)}},
			{Name: proto.String("DeleteEntriesRequest"), Field: []*descriptorpb.FieldDescriptorProto{msg("filter", 1, ".authtest.EntryFilter")}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("GetCacheRequest"), fd.Messages().ByName("DeleteEntriesRequest")
}

func newScoped(md protoreflect.MessageDescriptor, field string, org, project, domain string) *dynamicpb.Message {
	m := dynamicpb.NewMessage(md)
	fd := md.Fields().ByName(protoreflect.Name(field))
	sub := dynamicpb.NewMessage(fd.Message())
	sub.Set(fd.Message().Fields().ByName("org"), protoreflect.ValueOfString(org))
	sub.Set(fd.Message().Fields().ByName("project"), protoreflect.ValueOfString(project))
	sub.Set(fd.Message().Fields().ByName("domain"), protoreflect.ValueOfString(domain))
	m.Set(fd, protoreflect.ValueOfMessage(sub))
	return m
}

func TestScopeOfEveryRequestShape(t *testing.T) {
	t.Parallel()
	flyteGet, deleteEntries := flyteShapedMessages(t)
	cases := []struct {
		name string
		msg  any
		want Scope
		ok   bool
	}{
		{"ours", &cachev1.PutRequest{Scope: testScope}, Scope{"acme", "ml", "production"}, true},
		{"ours without scope", &cachev1.GetRequest{Key: "k"}, Scope{}, false},
		{"flyte identifier", newScoped(flyteGet, "identifier", "acme", "ml", "production"), Scope{"acme", "ml", "production"}, true},
		{"flyte without identifier", dynamicpb.NewMessage(flyteGet), Scope{}, false},
		{"bulk filter", newScoped(deleteEntries, "filter", "acme", "", ""), Scope{"acme", "", ""}, true},
		{"no scope field", &cachev1.Scope{Org: "acme"}, Scope{}, false},
		{"not a message", "acme", Scope{}, false},
	}
	for _, c := range cases {
		got, ok := scopeOf(c.msg)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: scopeOf = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// TestFlyteProceduresAreAuthorizedByIdentifier runs the decision the
// interceptor makes on Flyte-shaped requests: the identifier is the scope.
func TestFlyteProceduresAreAuthorizedByIdentifier(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, baseFile(), nil)
	flyteGet, deleteEntries := flyteShapedMessages(t)
	acme := newScoped(flyteGet, "identifier", "acme", "ml", "production")
	cases := []struct {
		procedure, token string
		msg              any
		want             string // "" for allowed, else the connect code
	}{
		{flyteService + "Get", readToken, acme, ""},
		{flyteService + "Put", readToken, acme, "permission_denied"},
		{flyteService + "Put", writeToken, acme, ""},
		{flyteService + "Delete", writeToken, acme, "permission_denied"},
		{flyteService + "Delete", adminToken, acme, ""},
		{flyteService + "Get", otherToken, acme, "permission_denied"},
		{flyteService + "Get", "wrong", acme, "unauthenticated"},
		{flyteService + "Unknown", adminToken, acme, "permission_denied"},
		{flyteService + "Get", adminToken, newScoped(flyteGet, "identifier", "globex", "ml", "production"), "permission_denied"},
		// A bulk delete of a whole org needs a grant with project and domain "*".
		{"/cacheservice.v1.CacheService/DeleteEntries", adminToken, newScoped(deleteEntries, "filter", "acme", "", ""), ""},
		{"/cacheservice.v1.CacheService/DeleteEntries", writeToken, newScoped(deleteEntries, "filter", "acme", "", "production"), "permission_denied"},
	}
	for _, c := range cases {
		_, _, _, err := a.check(t.Context(), c.procedure, bearer(c.token), "127.0.0.1:1", nil, c.msg)
		got := ""
		if err != nil {
			got = codeOf(err).String()
		}
		if got != c.want {
			t.Errorf("%s with %s: %q (%v), want %q", c.procedure, c.token, got, err, c.want)
		}
	}
}
