package auth

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// TestRoleOfKnowsTheRoles checks the table's roles for both services and
// that it knows nothing else; TestEveryMountedProcedureHasARole checks that
// it covers every procedure the server mounts.
func TestRoleOfKnowsTheRoles(t *testing.T) {
	t.Parallel()
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
		{"ours", &cachev1.PutRequest{Scope: testScope}, Scope{Org: "acme", Project: "ml", Domain: "production"}, true},
		{"ours without scope", &cachev1.GetRequest{Key: "k"}, Scope{}, false},
		{"flyte identifier", newScoped(flyteGet, "identifier", "acme", "ml", "production"), Scope{Org: "acme", Project: "ml", Domain: "production"}, true},
		{"flyte without identifier", dynamicpb.NewMessage(flyteGet), Scope{}, false},
		{"bulk filter", newScoped(deleteEntries, "filter", "acme", "", ""), Scope{Org: "acme", Project: "", Domain: ""}, true},
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
	// The wire names, spelled out: the contract Flyte's client calls.
	const flyteService = "/flyteidl2.cacheservice.v2.CacheService/"
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
