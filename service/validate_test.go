package service_test

import (
	"errors"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
)

// TestIdentityRules checks what the identity fields' rules answer: the
// verdict, rule id and message clients see. Lengths are in characters.
func TestIdentityRules(t *testing.T) {
	t.Parallel()
	sc := func() *cachev1.Scope { return &cachev1.Scope{Org: "o", Project: "p", Domain: "d"} }
	type violation struct{ field, rule, message string }
	tests := []struct {
		name string
		msg  proto.Message
		want []violation // nil: valid
	}{
		{"valid", &cachev1.GetRequest{Scope: sc(), Key: "k"}, nil},
		{"key at its limit in 2-byte characters", &cachev1.GetRequest{Scope: sc(), Key: strings.Repeat("é", 1024)}, nil},
		{"key with a newline-free unicode mix", &cachev1.DeleteRequest{Scope: sc(), Key: "ключ/键/🔑"}, nil},
		{"empty key", &cachev1.GetRequest{Scope: sc()},
			[]violation{{"key", "string.min_len", "must be at least 1 characters"}}},
		{"key over its limit", &cachev1.PutRequest{Scope: sc(), Key: strings.Repeat("é", 1025),
			Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "u"}}},
			[]violation{{"key", "string.max_len", "must be at most 1024 characters"}}},
		{"NUL in key", &cachev1.DeleteRequest{Scope: sc(), Key: "a\x00b"},
			[]violation{{"key", "string.pattern", "does not match regex pattern `^\\P{Cc}*$`"}}},
		{"escape in owner id", &cachev1.ReleaseReservationRequest{Scope: sc(), Key: "k", OwnerId: "w\x1b"},
			[]violation{{"owner_id", "string.pattern", "does not match regex pattern `^\\P{Cc}*$`"}}},
		{"empty owner id", &cachev1.GetOrExtendReservationRequest{Scope: sc(), Key: "k"},
			[]violation{{"owner_id", "string.min_len", "must be at least 1 characters"}}},
		{"org over its limit", &cachev1.GetRequest{Scope: &cachev1.Scope{Org: strings.Repeat("o", 256), Project: "p", Domain: "d"}, Key: "k"},
			[]violation{{"scope.org", "string.max_len", "must be at most 255 characters"}}},
		{"project and domain empty", &cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o"}, Key: "k"},
			[]violation{{"scope.project", "string.min_len", "must be at least 1 characters"}, {"scope.domain", "string.min_len", "must be at least 1 characters"}}},
		{"org at its limit", &cachev1.GetRequest{Scope: &cachev1.Scope{Org: strings.Repeat("o", 255), Project: "p", Domain: "d"}, Key: "k"}, nil},
	}
	for _, tt := range tests {
		err := protovalidate.Validate(tt.msg)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v, want valid", tt.name, err)
			}
			continue
		}
		var verr *protovalidate.ValidationError
		if !errors.As(err, &verr) {
			t.Errorf("%s: %v, want a validation error", tt.name, err)
			continue
		}
		var got []violation
		for _, v := range verr.Violations {
			got = append(got, violation{protovalidate.FieldPathString(v.Proto.GetField()), v.Proto.GetRuleId(), v.Proto.GetMessage()})
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: violations %v, want %v", tt.name, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: violation %v, want %v", tt.name, got[i], tt.want[i])
			}
		}
	}
}

// identityFields are the fields that name an entry or an owner, in both
// APIs; TestIdentityFieldsShareOneRule holds their rules equal.
var identityFields = map[protoreflect.Name]uint64{"org": 255, "project": 255, "domain": 255, "key": 1024, "owner_id": 1024}

// TestIdentityFieldsShareOneRule checks that every identity field of every
// request of both APIs carries the same rules (see Scope in cache.proto):
// they are written out in each field, so a new field or an edit of one
// could drift from the others. Fields of responses may go without rules.
func TestIdentityFieldsShareOneRule(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, file := range []protoreflect.FileDescriptor{cachev1.File_cacheservice_v1_cache_proto,
		flytecache.File_flyteidl2_cacheservice_cacheservice_proto, flytecachev2.File_flyteidl2_cacheservice_v2_cacheservice_proto} {
		msgs := file.Messages()
		for i := range msgs.Len() {
			fields := msgs.Get(i).Fields()
			for j := range fields.Len() {
				f := fields.Get(j)
				limit, ok := identityFields[f.Name()]
				if !ok || f.Kind() != protoreflect.StringKind {
					continue
				}
				rules, _ := proto.GetExtension(f.Options(), validate.E_Field).(*validate.FieldRules)
				if rules == nil && !strings.HasSuffix(string(msgs.Get(i).Name()), "Request") {
					continue // a response's field: the server wrote it
				}
				s := rules.GetString()
				if s.GetMinLen() != 1 || s.GetMaxLen() != limit || s.GetPattern() != `^\P{Cc}*$` {
					t.Errorf("%s: rules %v, want min_len 1, max_len %d, pattern ^\\P{Cc}*$", f.FullName(), s, limit)
				}
				checked++
			}
		}
	}
	if checked < 15 {
		t.Fatalf("checked %d identity fields; the proto files have more", checked)
	}
}
