package auth

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// scopedRequest is every request of our API that names one scope.
type scopedRequest interface {
	GetScope() *cachev1.Scope
}

// scopeFields are the fields, in order of preference, that carry a request's
// scope: ours ("scope"), Flyte's ("identifier", {org, project, domain}) and
// the bulk RPCs' filter ("filter", whose project and domain may be empty).
// Flyte's generated code is not imported here (it lives beside the service
// that answers it), so its requests are read by field name through
// protoreflect, which allocates nothing for generated messages.
var scopeFields = [...]protoreflect.Name{"scope", "identifier", "filter"}

// scopeOf returns the scope a request message touches, and false when the
// message carries none.
func scopeOf(msg any) (Scope, bool) {
	if r, ok := msg.(scopedRequest); ok {
		s := r.GetScope()
		if s == nil {
			return Scope{}, false
		}
		return Scope{Org: s.GetOrg(), Project: s.GetProject(), Domain: s.GetDomain()}, true
	}
	pm, ok := msg.(proto.Message)
	if !ok {
		return Scope{}, false
	}
	m := pm.ProtoReflect()
	fields := m.Descriptor().Fields()
	for _, name := range scopeFields {
		fd := fields.ByName(name)
		if fd == nil || fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			continue
		}
		if !m.Has(fd) {
			return Scope{}, false
		}
		return scopeFromMessage(m.Get(fd).Message())
	}
	return Scope{}, false
}

// scopeFromMessage reads the string fields org, project and domain.
func scopeFromMessage(m protoreflect.Message) (Scope, bool) {
	fields := m.Descriptor().Fields()
	str := func(name protoreflect.Name) (string, bool) {
		fd := fields.ByName(name)
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
			return "", false
		}
		return m.Get(fd).String(), true
	}
	org, ok1 := str("org")
	project, ok2 := str("project")
	domain, ok3 := str("domain")
	if !ok1 || !ok2 || !ok3 {
		return Scope{}, false
	}
	return Scope{Org: org, Project: project, Domain: domain}, true
}
