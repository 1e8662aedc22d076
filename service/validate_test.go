package service_test

import (
	"errors"
	"strings"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// TestIdentityRuleIsTheStandardRules checks the shared identity rule (see
// proto/cacheservice/v1/rules.proto) against what the standard min_len,
// max_len and pattern rules it replaced answered: the same verdict, rule id
// and message for every field that uses it. Lengths are in characters.
func TestIdentityRuleIsTheStandardRules(t *testing.T) {
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
