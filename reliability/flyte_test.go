package reliability

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/manager"
)

// flyteClients calls Flyte's API as Flyte's executor does (Connect binary
// over HTTP/1.1) and over gRPC.
func (b *testBundle) flyteClients() map[string]flytecachev2connect.CacheServiceClient {
	return map[string]flytecachev2connect.CacheServiceClient{
		"connect+proto": flytecachev2connect.NewCacheServiceClient(b.http1, b.baseURL),
		"grpc":          flytecachev2connect.NewCacheServiceClient(b.http2, b.baseURL, connect.WithGRPC()),
	}
}

func validFlytePut() *flytecachev2.PutCacheRequest {
	return &flytecachev2.PutCacheRequest{
		Identifier: &flytecachev2.Identifier{Org: "o", Project: "p", Domain: "d"},
		BaseRequest: &flytecache.PutCacheRequest{
			Key: "k",
			Output: &flytecache.CachedOutput{
				Output: &flytecache.CachedOutput_OutputUri{OutputUri: "s3://bucket/out"},
				Metadata: &flytecache.Metadata{
					SourceIdentifier: &flytecore.Identifier{ResourceType: flytecore.ResourceType_TASK, Name: "task", Version: "1"},
					KeyMap:           &flytecache.KeyMapMetadata{Values: map[string]string{"team": "data"}},
				},
			},
		},
	}
}

// TestFlyteHostileRequestsAreRefusedAndStoreNothing is the hostile suite
// through Flyte's API: each request is invalid_argument naming the field,
// leaks nothing, and leaves the database empty.
func TestFlyteHostileRequestsAreRefusedAndStoreNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, manager.DefaultConfig())
	put := func(mut func(*flytecachev2.PutCacheRequest)) *flytecachev2.PutCacheRequest {
		r := validFlytePut()
		mut(r)
		return r
	}
	thousands := map[string]string{}
	for i := range 5000 {
		thousands[fmt.Sprintf("label-%d", i)] = "v"
	}
	big := protowire.AppendTag(nil, 1, protowire.BytesType)
	big = protowire.AppendBytes(big, make([]byte, manager.DefaultConfig().MaxInlineBytes))
	bigLiterals := &flytecore.LiteralMap{}
	if err := proto.Unmarshal(big, bigLiterals); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, field string
		req         *flytecachev2.PutCacheRequest
	}{
		{"NUL in key", "base_request.key", put(func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Key = "a\x00b" })},
		{"NUL in org", "identifier.org", put(func(r *flytecachev2.PutCacheRequest) { r.Identifier.Org = "\x00" })},
		{"escape in key", "base_request.key", put(func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Key = "k\x1b[2J" })},
		{"NUL in uri", "base_request.output.output_uri", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputUri{OutputUri: "s3://b/\x00"}
		})},
		{"NUL in source name", "base_request.output.metadata.source_identifier.name", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Metadata.SourceIdentifier.Name = "t\x00"
		})},
		{"NUL in key_map value", "base_request.output.metadata.key_map.values", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Metadata.KeyMap.Values["team"] = "da\x00ta"
		})},
		{"thousands of key_map values", "base_request.output.metadata.key_map.values", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Metadata.KeyMap.Values = thousands
		})},
		{"key over 1024 characters", "base_request.key", put(func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Key = strings.Repeat("k", 1025) })},
		{"literals over the limit", "base_request.output.output_literals", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: bigLiterals}
		})},
		{"delete_blob", "base_request.overwrite.delete_blob", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Overwrite = &flytecache.OverwriteOutput{Overwrite: true, DeleteBlob: true}
		})},
		{"malformed max_age", "max_age", put(func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Overwrite = &flytecache.OverwriteOutput{MaxAge: &durationpb.Duration{Seconds: 1, Nanos: -1}}
		})},
	} {
		for name, c := range b.flyteClients() {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				_, err := c.Put(t.Context(), connect.NewRequest(tc.req))
				wantInvalid(t, err, tc.field)
				b.assertEmpty(t)
			})
		}
	}
	b.assertNoServerErrors(t)
}
