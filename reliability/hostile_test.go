package reliability

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

// hostileCase is a request that must be refused with invalid_argument and
// store nothing.
type hostileCase struct {
	name  string
	field string // what the message must name
	put   *cachev1.PutRequest
	claim *cachev1.GetOrExtendReservationRequest
}

func validPut() *cachev1.PutRequest {
	return &cachev1.PutRequest{
		Scope: scope(), Key: "k",
		Output: &cachev1.CachedOutput{
			Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/out"},
			Metadata: &cachev1.Metadata{
				Source: &cachev1.Source{Name: "task", Version: "1"},
				Labels: map[string]string{"team": "data"},
			},
		},
	}
}

func validClaim() *cachev1.GetOrExtendReservationRequest {
	return &cachev1.GetOrExtendReservationRequest{Scope: scope(), Key: "k", OwnerId: "w1"}
}

// wideString returns n characters of 4-byte UTF-8 that do not repeat, so
// PostgreSQL cannot compress them away.
func wideString(n int) string {
	var sb strings.Builder
	for i := range n {
		sb.WriteRune(rune(0x1F300 + i%0x2FF)) // symbols and pictographs
		if i%0x2FF == 0x2FE {
			sb.WriteRune(rune(0x20000 + i)) // CJK extension B breaks the period
		}
	}
	return string([]rune(sb.String())[:n])
}

func hostileCases() []hostileCase {
	put := func(mut func(*cachev1.PutRequest)) *cachev1.PutRequest {
		r := validPut()
		mut(r)
		return r
	}
	claim := func(mut func(*cachev1.GetOrExtendReservationRequest)) *cachev1.GetOrExtendReservationRequest {
		r := validClaim()
		mut(r)
		return r
	}
	thousands := map[string]string{}
	for i := range 5000 {
		thousands[fmt.Sprintf("label-%d", i)] = "v"
	}
	return []hostileCase{
		{name: "NUL in key", field: "key", put: put(func(r *cachev1.PutRequest) { r.Key = "a\x00b" }),
			claim: claim(func(r *cachev1.GetOrExtendReservationRequest) { r.Key = "a\x00b" })},
		{name: "NUL in org", field: "scope.org", put: put(func(r *cachev1.PutRequest) { r.Scope.Org = "\x00" }),
			claim: claim(func(r *cachev1.GetOrExtendReservationRequest) { r.Scope.Org = "\x00" })},
		{name: "NUL in owner_id", field: "owner_id",
			claim: claim(func(r *cachev1.GetOrExtendReservationRequest) { r.OwnerId = "w\x001" })},
		{name: "NUL in uri", field: "output.uri",
			put: put(func(r *cachev1.PutRequest) { r.Output.Value = &cachev1.CachedOutput_Uri{Uri: "s3://b/\x00"} })},
		{name: "NUL in source name", field: "output.metadata.source.name",
			put: put(func(r *cachev1.PutRequest) { r.Output.Metadata.Source.Name = "t\x00" })},
		{name: "NUL in source version", field: "output.metadata.source.version",
			put: put(func(r *cachev1.PutRequest) { r.Output.Metadata.Source.Version = "\x00" })},
		{name: "NUL in label value", field: "output.metadata.labels",
			put: put(func(r *cachev1.PutRequest) { r.Output.Metadata.Labels["team"] = "da\x00ta" })},
		{name: "NUL in label key", field: "output.metadata.labels",
			put: put(func(r *cachev1.PutRequest) { r.Output.Metadata.Labels["te\x00am"] = "data" })},
		{name: "escape in key", field: "key", put: put(func(r *cachev1.PutRequest) { r.Key = "k\x1b[2J" }),
			claim: claim(func(r *cachev1.GetOrExtendReservationRequest) { r.Key = "k\x1b[2J" })},
		{name: "thousands of labels", field: "output.metadata.labels",
			put: put(func(r *cachev1.PutRequest) { r.Output.Metadata.Labels = thousands })},
		{name: "key over 1024 characters", field: "key",
			put:   put(func(r *cachev1.PutRequest) { r.Key = strings.Repeat("k", 1025) }),
			claim: claim(func(r *cachev1.GetOrExtendReservationRequest) { r.Key = strings.Repeat("k", 1025) })},
		{name: "inline over the limit", field: "output.inline",
			put: put(func(r *cachev1.PutRequest) {
				r.Output.Value = &cachev1.CachedOutput_Inline{Inline: make([]byte, manager.DefaultConfig().MaxInlineBytes+1)}
			})},
	}
}

// TestHostileRequestsAreRefusedAndStoreNothing sends each hostile request
// over Connect JSON and gRPC: each is invalid_argument naming the field,
// leaks nothing, and leaves the database empty.
func TestHostileRequestsAreRefusedAndStoreNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	for _, tc := range hostileCases() {
		for proto, c := range b.clients() {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				if tc.put != nil {
					_, err := c.Put(t.Context(), connect.NewRequest(tc.put))
					wantInvalid(t, err, tc.field)
				}
				if tc.claim != nil {
					_, err := c.GetOrExtendReservation(t.Context(), connect.NewRequest(tc.claim))
					wantInvalid(t, err, tc.field)
				}
				b.assertEmpty(t)
			})
		}
	}
	b.assertNoServerErrors(t)
}

// wantInvalid fails unless err is invalid_argument naming field, with no
// internal detail.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
		t.Fatalf("code = %v (%v), want invalid_argument", code, err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%T is not a connect error", err)
	}
	if !strings.Contains(ce.Message(), field) {
		t.Errorf("message %q does not name %s", ce.Message(), field)
	}
	assertNoLeak(t, ce.Message())
}

// TestWideIdentitiesAreStoredOrRefusedCleanly uses scopes and keys at their
// character limits in 4-byte characters: far more bytes than PostgreSQL's
// index can hold uncompressed. Each RPC either works or answers
// invalid_argument; never internal, and a refused Put stores nothing.
func TestWideIdentitiesAreStoredOrRefusedCleanly(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	wide := &cachev1.Scope{Org: wideString(255), Project: wideString(255), Domain: wideString(255)}
	for name, tc := range map[string]struct {
		scope *cachev1.Scope
		key   string
	}{
		"wide key":             {scope(), wideString(1024)},
		"wide scope":           {wide, "k"},
		"wide scope and key":   {wide, wideString(1024)},
		"ascii at every limit": {&cachev1.Scope{Org: strings.Repeat("o", 255), Project: strings.Repeat("p", 255), Domain: strings.Repeat("d", 255)}, strings.Repeat("k", 1024)},
	} {
		t.Run(name, func(t *testing.T) {
			if utf8.RuneCountInString(tc.key) > 1024 {
				t.Fatalf("test key is %d characters", utf8.RuneCountInString(tc.key))
			}
			c := b.connectClient()
			put := validPut()
			put.Scope, put.Key = tc.scope, tc.key
			_, putErr := c.Put(t.Context(), connect.NewRequest(put))
			_, claimErr := c.GetOrExtendReservation(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: tc.scope, Key: tc.key, OwnerId: "w1"}))
			for rpc, err := range map[string]error{"Put": putErr, "GetOrExtendReservation": claimErr} {
				if err != nil && connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Errorf("%s: %v, want success or invalid_argument", rpc, err)
				}
			}
			got, getErr := c.Get(t.Context(), connect.NewRequest(&cachev1.GetRequest{Scope: tc.scope, Key: tc.key}))
			switch {
			case putErr == nil && getErr != nil:
				t.Errorf("Put succeeded but Get: %v", getErr)
			case putErr == nil && got.Msg.GetOutput().GetUri() != put.GetOutput().GetUri():
				t.Errorf("Get = %v, want what was put", got.Msg.GetOutput())
			case putErr != nil && connect.CodeOf(getErr) != connect.CodeNotFound && connect.CodeOf(getErr) != connect.CodeInvalidArgument:
				t.Errorf("Put refused, then Get: %v, want not_found or invalid_argument", getErr)
			}
		})
	}
	b.assertNoServerErrors(t)
}

// TestMalformedBodiesAreInvalidArgument sends broken encodings to every RPC
// the edge serves:
// invalid UTF-8 in string fields (JSON and binary), truncated JSON, wrong
// types, a message of another shape. Each is invalid_argument and nothing
// is stored.
func TestMalformedBodiesAreInvalidArgument(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	// A binary request whose key (field 2) is invalid UTF-8, after a valid scope.
	scopeBytes, err := proto.Marshal(scope())
	if err != nil {
		t.Fatal(err)
	}
	var badKey []byte
	badKey = protowire.AppendTag(badKey, 1, protowire.BytesType)
	badKey = protowire.AppendBytes(badKey, scopeBytes)
	badKey = protowire.AppendTag(badKey, 2, protowire.BytesType)
	badKey = protowire.AppendBytes(badKey, []byte("k\xff\xfe"))
	badOwner := append(bytes.Clone(badKey[:len(badKey)-5]), 0x12, 1, 'k')
	badOwner = protowire.AppendTag(badOwner, 3, protowire.BytesType)
	badOwner = protowire.AppendBytes(badOwner, []byte{0xc3, 0x28})

	type body struct {
		name, contentType string
		data              []byte
		rpcs              []string // the RPCs whose fields the body sets; nil for all
	}
	reserving := []string{cachev1connect.CacheServiceGetOrExtendReservationProcedure, cachev1connect.CacheServiceReleaseReservationProcedure}
	withDurations := []string{cachev1connect.CacheServicePutProcedure, cachev1connect.CacheServiceGetOrExtendReservationProcedure}
	const okScope = `"scope":{"org":"o","project":"p","domain":"d"}`
	bodies := []body{
		{"binary key invalid utf-8", "application/proto", badKey, nil},
		{"binary owner invalid utf-8", "application/proto", badOwner, reserving},
		{"binary truncated", "application/proto", badKey[:len(badKey)-2], nil},
		{"binary garbage", "application/proto", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, nil},
		{"json key invalid utf-8", "application/json", []byte(`{` + okScope + `,"key":"k` + "\xff" + `","ownerId":"w","output":{"uri":"u"}}`), nil},
		{"json owner invalid utf-8", "application/json", []byte(`{` + okScope + `,"key":"k","ownerId":"` + "\xc3\x28" + `"}`), reserving},
		{"json escaped NUL", "application/json", []byte(`{` + okScope + `,"key":"k\u0000","ownerId":"w","output":{"uri":"u"}}`), nil},
		{"json lone surrogate", "application/json", []byte(`{` + okScope + `,"key":"k\ud800","ownerId":"w","output":{"uri":"u"}}`), nil},
		{"json truncated", "application/json", []byte(`{"scope":{"org":"o","project":"p"`), nil},
		{"json wrong type", "application/json", []byte(`{"scope":"o","key":7}`), nil},
		{"json array", "application/json", []byte(`[1,2,3]`), nil},
		{"json deep nesting", "application/json", []byte(strings.Repeat(`{"scope":`, 20000) + strings.Repeat("}", 20000)), nil},
		{"json NaN duration", "application/json", []byte(`{` + okScope + `,"key":"k","ownerId":"w","heartbeatInterval":"NaNs","maxAge":"NaNs","output":{"uri":"u"}}`), withDurations},
		{"empty", "application/json", nil, nil},
	}
	for _, bd := range bodies {
		rpcs := bd.rpcs
		if rpcs == nil {
			rpcs = service.Procedures()
		}
		for _, rpc := range rpcs {
			t.Run(bd.name+rpc, func(t *testing.T) {
				r := b.post(t.Context(), t, rpc, bd.contentType, bytes.NewReader(bd.data), nil)
				if r.code != connect.CodeInvalidArgument {
					t.Fatalf("status %d code %v (%q), want invalid_argument", r.status, r.code, r.msg)
				}
				assertNoLeak(t, r.msg)
			})
		}
	}
	b.assertEmpty(t)
	b.assertNoServerErrors(t)
}

// TestOversizedBodiesAreResourceExhausted sends bodies over the request
// limit, plain and as a gzip bomb that is small on the wire: each is
// resource_exhausted and nothing is stored.
func TestOversizedBodiesAreResourceExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	big := validPut()
	big.Output.Value = &cachev1.CachedOutput_Inline{Inline: make([]byte, maxRequestBytes+1)}
	data, err := proto.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if bomb.Len() > 64<<10 {
		t.Fatalf("gzip bomb is %d bytes on the wire", bomb.Len())
	}
	for name, send := range map[string]func() rawResponse{
		"plain": func() rawResponse {
			return b.post(t.Context(), t, cachev1connect.CacheServicePutProcedure, "application/proto", bytes.NewReader(data), nil)
		},
		"gzip bomb": func() rawResponse {
			return b.post(t.Context(), t, cachev1connect.CacheServicePutProcedure, "application/proto", bytes.NewReader(bomb.Bytes()),
				http.Header{"Content-Encoding": {"gzip"}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := send()
			if r.code != connect.CodeResourceExhausted {
				t.Fatalf("status %d code %v (%q), want resource_exhausted", r.status, r.code, r.msg)
			}
			assertNoLeak(t, r.msg)
		})
	}
	b.assertEmpty(t)
	b.assertNoServerErrors(t)
}
