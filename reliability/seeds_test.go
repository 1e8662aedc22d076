package reliability

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
)

// writeSeedsEnv makes TestWriteFuzzSeeds rewrite testdata/fuzz from
// fuzzSeeds; the result is committed.
const writeSeedsEnv = "CACHESERVICE_WRITE_FUZZ_SEEDS"

// fuzzSeeds are, per target, well-formed requests on the identities that
// populate fills, and some near misses. Each is written as JSON and binary.
func fuzzSeeds() map[string][]proto.Message {
	sc := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	uri := func(u string) *cachev1.CachedOutput {
		return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: u}}
	}
	full := &cachev1.CachedOutput{
		Value: &cachev1.CachedOutput_Inline{Inline: []byte("out\x00put")},
		Metadata: &cachev1.Metadata{
			Source:        &cachev1.Source{Name: "task", Version: "v1"},
			Labels:        map[string]string{"team": "ml", "multi": "line\nvalue"},
			CreatedAt:     timestamppb.New(time.Unix(0, 0)), // ignored by the server
			LastUpdatedAt: timestamppb.New(time.Unix(0, 0)),
		},
	}
	seeds := map[string][]proto.Message{
		"FuzzGet": {
			&cachev1.GetRequest{Scope: sc, Key: "k"},
			&cachev1.GetRequest{Scope: sc, Key: "inline"},
			&cachev1.GetRequest{Scope: sc, Key: "missing"},
			&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o"}, Key: "k"},
		},
		"FuzzPut": {
			&cachev1.PutRequest{Scope: sc, Key: "new", Output: uri("s3://b/new")},
			&cachev1.PutRequest{Scope: sc, Key: "k", Output: uri("s3://b/k2")},
			&cachev1.PutRequest{Scope: sc, Key: "k", Output: full, Overwrite: true},
			&cachev1.PutRequest{Scope: sc, Key: "inline", Output: uri("u"), MaxAge: durationpb.New(time.Millisecond)},
			&cachev1.PutRequest{Scope: sc, Key: "k", Output: &cachev1.CachedOutput{}},
		},
		"FuzzDelete": {
			&cachev1.DeleteRequest{Scope: sc, Key: "k"},
			&cachev1.DeleteRequest{Scope: sc, Key: "missing"},
			&cachev1.DeleteRequest{Key: "k"},
		},
		"FuzzGetOrExtendReservation": {
			&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "held", OwnerId: "w1", HeartbeatInterval: durationpb.New(500 * time.Millisecond)},
			&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "held", OwnerId: "w2"},
			&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "free", OwnerId: "w3", HeartbeatInterval: durationpb.New(time.Hour)},
			&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "free", OwnerId: "w3", HeartbeatInterval: durationpb.New(-time.Second)},
		},
		"FuzzReleaseReservation": {
			&cachev1.ReleaseReservationRequest{Scope: sc, Key: "held", OwnerId: "w2"},
			&cachev1.ReleaseReservationRequest{Scope: sc, Key: "held", OwnerId: "w1"},
			&cachev1.ReleaseReservationRequest{Scope: sc, Key: "none", OwnerId: "w1"},
			&cachev1.ReleaseReservationRequest{Scope: sc, Key: "held"},
		},
	}
	maps.Copy(seeds, flyteFuzzSeeds())
	return seeds
}

// flyteFuzzSeeds are the seeds of Flyte's API: its URI and LiteralMap
// entries, a cacheservice.v1 inline entry it cannot read, delete_blob, a
// Put without source, a zero heartbeat.
func flyteFuzzSeeds() map[string][]proto.Message {
	id := &flytecachev2.Identifier{Org: "o", Project: "p", Domain: "d"}
	md := &flytecache.Metadata{
		SourceIdentifier: &flytecore.Identifier{ResourceType: flytecore.ResourceType_TASK, Project: "p", Domain: "d", Name: "t", Version: "v", Org: "o"},
		KeyMap:           &flytecache.KeyMapMetadata{Values: map[string]string{"exec-name": "e"}},
	}
	lm := &flytecore.LiteralMap{}
	if err := proto.Unmarshal([]byte{0x0a, 0x03, 0x0a, 0x01, 'y'}, lm); err != nil {
		panic(err)
	}
	uri := func(u string) *flytecache.CachedOutput {
		return &flytecache.CachedOutput{Output: &flytecache.CachedOutput_OutputUri{OutputUri: u}, Metadata: md}
	}
	return map[string][]proto.Message{
		"FuzzFlyteGet": {
			&flytecachev2.GetCacheRequest{Identifier: id, BaseRequest: &flytecache.GetCacheRequest{Key: "flyte"}},
			&flytecachev2.GetCacheRequest{Identifier: id, BaseRequest: &flytecache.GetCacheRequest{Key: "literals"}},
			&flytecachev2.GetCacheRequest{Identifier: id, BaseRequest: &flytecache.GetCacheRequest{Key: "inline"}},
			&flytecachev2.GetCacheRequest{Identifier: id},
		},
		"FuzzFlytePut": {
			&flytecachev2.PutCacheRequest{Identifier: id, BaseRequest: &flytecache.PutCacheRequest{Key: "new", Output: uri("s3://b/new")}},
			&flytecachev2.PutCacheRequest{Identifier: id, BaseRequest: &flytecache.PutCacheRequest{Key: "flyte",
				Output:    &flytecache.CachedOutput{Output: &flytecache.CachedOutput_OutputLiterals{OutputLiterals: lm}, Metadata: md},
				Overwrite: &flytecache.OverwriteOutput{Overwrite: true}}},
			&flytecachev2.PutCacheRequest{Identifier: id, BaseRequest: &flytecache.PutCacheRequest{Key: "k", Output: uri("s3://b/x"),
				Overwrite: &flytecache.OverwriteOutput{DeleteBlob: true, MaxAge: durationpb.New(1)}}},
			&flytecachev2.PutCacheRequest{Identifier: id, BaseRequest: &flytecache.PutCacheRequest{Key: "k",
				Output: &flytecache.CachedOutput{Output: &flytecache.CachedOutput_OutputUri{OutputUri: "s3://b/x"}}}},
		},
		"FuzzFlyteDelete": {
			&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: "flyte"}},
			&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: "missing"}},
		},
		"FuzzFlyteGetOrExtendReservation": {
			&flytecachev2.GetOrExtendReservationRequest{Identifier: id, BaseRequest: &flytecache.GetOrExtendReservationRequest{
				Key: "held", OwnerId: "w2", HeartbeatInterval: durationpb.New(0)}},
			&flytecachev2.GetOrExtendReservationRequest{Identifier: id, BaseRequest: &flytecache.GetOrExtendReservationRequest{
				Key: "free", OwnerId: "w1", HeartbeatInterval: durationpb.New(2 * time.Second)}},
		},
		"FuzzFlyteReleaseReservation": {
			&flytecachev2.ReleaseReservationRequest{Identifier: id, BaseRequest: &flytecache.ReleaseReservationRequest{Key: "held", OwnerId: "w1"}},
			&flytecachev2.ReleaseReservationRequest{Identifier: id, BaseRequest: &flytecache.ReleaseReservationRequest{Key: "held", OwnerId: "w2"}},
		},
	}
}

// TestWriteFuzzSeeds regenerates the committed seed corpora:
// CACHESERVICE_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./reliability
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv(writeSeedsEnv) == "" {
		t.Skipf("set %s=1 to rewrite testdata/fuzz", writeSeedsEnv)
	}
	for target, msgs := range fuzzSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		// Inputs the fuzzer found and kept as regressions have other names.
		old, err := filepath.Glob(filepath.Join(dir, "seed-*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, msg := range msgs {
			js, err := protojson.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			bin, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			writeSeed(t, filepath.Join(dir, fmt.Sprintf("seed-%02d-json", i)), false, js)
			writeSeed(t, filepath.Join(dir, fmt.Sprintf("seed-%02d-binary", i)), true, bin)
		}
	}
}

// writeSeed writes one corpus file in go test's fuzz encoding.
func writeSeed(t *testing.T, path string, binary bool, body []byte) {
	t.Helper()
	data := fmt.Sprintf("go test fuzz v1\nbool(%v)\n[]byte(%s)\n", binary, strconv.Quote(string(body)))
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
