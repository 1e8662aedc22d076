package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/internal/metricstest"
	"github.com/cacheservice/cacheservice/internal/otlptest"
)

// flyteProtocol is a way Flyte's API is called.
type flyteProtocol struct {
	name   string
	client flytecachev2connect.CacheServiceClient
}

// flyteProtocols: Connect binary over HTTP/1.1 with http.DefaultClient,
// exactly as Flyte's executor builds its client (NewHTTPClient), then gRPC
// over h2c, Connect JSON and gRPC-Web, which other tools may use, and
// Connect binary and JSON over h2c. Tests index into it: [:2] are the binary
// ones Flyte's executor could use, [2] is JSON.
func (s *testServer) flyteProtocols(t *testing.T) []flyteProtocol {
	t.Helper()
	return []flyteProtocol{
		{"connect+proto/http1.1/default-client", flytecachev2connect.NewCacheServiceClient(http.DefaultClient, s.url)},
		{"grpc/h2c", flytecachev2connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithGRPC())},
		{"connect+json/http1.1", flytecachev2connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithProtoJSON())},
		{"grpc-web/http1.1", flytecachev2connect.NewCacheServiceClient(http1Client(t), s.url, connect.WithGRPCWeb())},
		{"connect+proto/h2c", flytecachev2connect.NewCacheServiceClient(h2cClient(t), s.url)},
		{"connect+json/h2c", flytecachev2connect.NewCacheServiceClient(h2cClient(t), s.url, connect.WithProtoJSON())},
	}
}

// flyteIdentifier is a scope unique to the test, with dashes where Flyte's
// own service would have joined them into the key.
func flyteIdentifier(t *testing.T) *flytecachev2.Identifier {
	t.Helper()
	return &flytecachev2.Identifier{Org: "org-a", Project: strings.ReplaceAll(t.Name(), "/", "."), Domain: "development"}
}

// taskSource is a source identifier with all six fields set, as Flyte's
// client sends the task's identifier.
func taskSource() *flytecore.Identifier {
	return &flytecore.Identifier{
		ResourceType: flytecore.ResourceType_TASK, Project: "flytesnacks", Domain: "development",
		Name: "wf.train", Version: "v-7f3a", Org: "org-a",
	}
}

// flyteMetadata is what Flyte's client sends with a Put (newCacheMetadata),
// an empty exec-org included.
func flyteMetadata() *flytecache.Metadata {
	return &flytecache.Metadata{
		SourceIdentifier: taskSource(),
		KeyMap: &flytecache.KeyMapMetadata{Values: map[string]string{
			// The keys of Flyte's metadata_keys.go.
			"task-version": "v-7f3a", "exec-project": "flytesnacks", "exec-domain": "development",
			"execution-name": "a1b2c3", "exec-node": "n0", "exec-attempt": "0", "exec-org": "",
		}},
	}
}

func flytePutURI(id *flytecachev2.Identifier, key, uri string, overwrite bool) *flytecachev2.PutCacheRequest {
	return &flytecachev2.PutCacheRequest{
		Identifier: id,
		BaseRequest: &flytecache.PutCacheRequest{
			Key:       key,
			Output:    &flytecache.CachedOutput{Output: &flytecache.CachedOutput_OutputUri{OutputUri: uri}, Metadata: flyteMetadata()},
			Overwrite: &flytecache.OverwriteOutput{Overwrite: overwrite},
		},
	}
}

func flyteGet(id *flytecachev2.Identifier, key string) *connect.Request[flytecachev2.GetCacheRequest] {
	return connect.NewRequest(&flytecachev2.GetCacheRequest{Identifier: id, BaseRequest: &flytecache.GetCacheRequest{Key: key}})
}

func flyteReserve(id *flytecachev2.Identifier, key, owner string, heartbeat time.Duration) *connect.Request[flytecachev2.GetOrExtendReservationRequest] {
	return connect.NewRequest(&flytecachev2.GetOrExtendReservationRequest{Identifier: id, BaseRequest: &flytecache.GetOrExtendReservationRequest{
		Key: key, OwnerId: owner, HeartbeatInterval: durationpb.New(heartbeat),
	}})
}

func flyteRelease(id *flytecachev2.Identifier, key, owner string) *connect.Request[flytecachev2.ReleaseReservationRequest] {
	return connect.NewRequest(&flytecachev2.ReleaseReservationRequest{Identifier: id, BaseRequest: &flytecache.ReleaseReservationRequest{Key: key, OwnerId: owner}})
}

// wantFlyteHit checks what Flyte's client checks before it accepts a hit
// (Get, readCachedOutput, getSourceFromMetadata), and returns the output.
func wantFlyteHit(t *testing.T) func(*connect.Response[flytecache.GetCacheResponse], error) *flytecache.CachedOutput {
	t.Helper()
	return func(res *connect.Response[flytecache.GetCacheResponse], err error) *flytecache.CachedOutput {
		t.Helper()
		return checkFlyteHit(t, res, err)
	}
}

func checkFlyteHit(t *testing.T, res *connect.Response[flytecache.GetCacheResponse], err error) *flytecache.CachedOutput {
	t.Helper()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	out := res.Msg.GetOutput()
	if out == nil || out.GetOutput() == nil || out.GetMetadata() == nil {
		t.Fatalf("Get = %v: Flyte's client calls this a malformed response", out)
	}
	if out.GetMetadata().GetLastUpdatedAt() == nil || out.GetMetadata().GetCreatedAt() == nil {
		t.Fatalf("Get = %v: no last_updated_at/created_at", out)
	}
	if out.GetMetadata().GetSourceIdentifier() == nil {
		t.Fatalf("Get = %v: Flyte's client refuses a hit without a source identifier", out)
	}
	return out
}

// TestFlyteExecutorFlow runs the executor's whole flow against the server
// with a client generated from our Flyte-compatible proto: miss, reserve, a
// second owner sees the first, put, hit with equal outputs and metadata,
// release, overwrite.
func TestFlyteExecutorFlow(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-heartbeat", "10s", "--grace-multiplier", "3")
	for _, p := range srv.flyteProtocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c, id, key := p.client, flyteIdentifier(t), "sT9c-aBc1-dEf2-ghi3-v1"

			_, err := c.Get(callCtx(t), flyteGet(id, key))
			wantCode(t, err, connect.CodeNotFound)

			// Two executors race for the key; the second sees the first.
			first, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, key, "ns/pod-a", 2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if r := first.Msg.GetReservation(); r.GetOwnerId() != "ns/pod-a" || r.GetKey() != key ||
				r.GetHeartbeatInterval().AsDuration() != 2*time.Second || r.GetExpiresAt() == nil {
				t.Fatalf("first reservation = %v", r)
			}
			second, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, key, "ns/pod-b", 2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(second.Msg.GetReservation(), first.Msg.GetReservation()) {
				t.Fatalf("second claimant saw %v, want the first's reservation %v", second.Msg.GetReservation(), first.Msg.GetReservation())
			}
			// The owner heartbeats: same owner, later expiry.
			again, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, key, "ns/pod-a", 2*time.Second))
			if err != nil || again.Msg.GetReservation().GetOwnerId() != "ns/pod-a" ||
				again.Msg.GetReservation().GetExpiresAt().AsTime().Before(first.Msg.GetReservation().GetExpiresAt().AsTime()) {
				t.Fatalf("heartbeat = %v, %v", again, err)
			}

			if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, key, "s3://bucket/a/outputs.pb", false))); err != nil {
				t.Fatalf("Put: %v", err)
			}
			for _, who := range []string{"owner", "waiter"} {
				out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, key)))
				if out.GetOutputUri() != "s3://bucket/a/outputs.pb" {
					t.Fatalf("%s: output = %v", who, out.GetOutput())
				}
				md := out.GetMetadata()
				if !proto.Equal(md.GetSourceIdentifier(), taskSource()) || !proto.Equal(md.GetKeyMap(), flyteMetadata().GetKeyMap()) {
					t.Fatalf("%s: metadata = %v, want source %v and key_map %v", who, md, taskSource(), flyteMetadata().GetKeyMap())
				}
			}
			created := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, key))).GetMetadata().GetCreatedAt().AsTime()

			if _, err := c.ReleaseReservation(callCtx(t), flyteRelease(id, key, "ns/pod-a")); err != nil {
				t.Fatalf("ReleaseReservation: %v", err)
			}
			// Released twice, or by someone else: still fine for Flyte's cleanup paths.
			if _, err := c.ReleaseReservation(callCtx(t), flyteRelease(id, key, "ns/pod-a")); err != nil {
				t.Fatalf("second ReleaseReservation: %v", err)
			}
			if r, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, key, "ns/pod-b", time.Second)); err != nil || r.Msg.GetReservation().GetOwnerId() != "ns/pod-b" {
				t.Fatalf("after release the next claimant owns it: %v, %v", r, err)
			}

			// Flyte's Put (overwrite=false) on an existing entry.
			_, err = c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, key, "s3://bucket/b/outputs.pb", false)))
			wantCode(t, err, connect.CodeAlreadyExists)
			// Flyte's Update (overwrite=true).
			if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, key, "s3://bucket/b/outputs.pb", true))); err != nil {
				t.Fatalf("Put with overwrite: %v", err)
			}
			out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, key)))
			if out.GetOutputUri() != "s3://bucket/b/outputs.pb" || !out.GetMetadata().GetCreatedAt().AsTime().Equal(created) ||
				out.GetMetadata().GetLastUpdatedAt().AsTime().Before(created) {
				t.Fatalf("after overwrite: %v (created before: %v)", out, created)
			}

			if _, err := c.Delete(callCtx(t), connect.NewRequest(&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: key}})); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			_, err = c.Get(callCtx(t), flyteGet(id, key))
			wantCode(t, err, connect.CodeNotFound)
		})
	}
}

// deepLiterals is a serialized LiteralMap-shaped tree the server has no
// schema for: maps in collections in maps, 24 levels deep, with field
// numbers no Flyte release uses and every wire type.
func deepLiterals() []byte {
	leaf := protowire.AppendTag(nil, 1, protowire.VarintType)
	leaf = protowire.AppendVarint(leaf, 1<<40)
	leaf = protowire.AppendTag(leaf, 2, protowire.Fixed64Type)
	leaf = protowire.AppendFixed64(leaf, 0x0123456789abcdef)
	leaf = protowire.AppendTag(leaf, 3, protowire.Fixed32Type)
	leaf = protowire.AppendFixed32(leaf, 0xdeadbeef)
	leaf = protowire.AppendTag(leaf, 536870911, protowire.BytesType) // the largest field number
	leaf = protowire.AppendBytes(leaf, []byte("\x00\xffnot utf-8\xfe"))
	node := leaf
	for depth := range 24 {
		next := protowire.AppendTag(nil, protowire.Number(depth%5+1), protowire.BytesType)
		next = protowire.AppendBytes(next, node)
		next = protowire.AppendTag(next, 9999, protowire.BytesType)
		next = protowire.AppendBytes(next, fmt.Appendf(nil, "level-%d", depth))
		node = next
	}
	// LiteralMap.literals is map<string, Literal> = 1: entries of key 1, value 2.
	var out []byte
	for _, name := range []string{"o0", "o1"} {
		entry := protowire.AppendTag(nil, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, name)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, node)
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, entry)
	}
	return out
}

func literalMapOf(t *testing.T, b []byte) *flytecore.LiteralMap {
	t.Helper()
	lm := &flytecore.LiteralMap{}
	if err := proto.Unmarshal(b, lm); err != nil {
		t.Fatal(err)
	}
	return lm
}

// TestFlyteLiteralsRoundTripByteForByte stores output_literals over both
// binary protocols and reads back exactly the bytes sent, through Flyte's
// API and through ours (as inline bytes).
func TestFlyteLiteralsRoundTripByteForByte(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	want := deepLiterals()
	ours := cachev1connect.NewCacheServiceClient(h2cClient(t), srv.url, connect.WithGRPC())
	for _, p := range srv.flyteProtocols(t)[:2] {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			id := flyteIdentifier(t)
			req := flytePutURI(id, "k", "", false)
			req.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: literalMapOf(t, want)}
			if _, err := p.client.Put(callCtx(t), connect.NewRequest(req)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			out := wantFlyteHit(t)(p.client.Get(callCtx(t), flyteGet(id, "k")))
			got, err := proto.Marshal(out.GetOutputLiterals())
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Get returned %d bytes of literals (%v), want the %d bytes sent", len(got), err, len(want))
			}
			res, err := ours.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{
				Scope: &cachev1.Scope{Org: id.Org, Project: id.Project, Domain: id.Domain}, Key: "k",
			}))
			if err != nil || !bytes.Equal(res.Msg.GetOutput().GetInline(), want) {
				t.Fatalf("our Get = %v, %v; want the literals as inline bytes", res, err)
			}
		})
	}

	t.Run("empty LiteralMap", func(t *testing.T) {
		c, id := srv.flyteProtocols(t)[0].client, flyteIdentifier(t)
		req := flytePutURI(id, "k", "", false)
		req.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: &flytecore.LiteralMap{}}
		if _, err := c.Put(callCtx(t), connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
		if out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, "k"))); out.GetOutputLiterals() == nil {
			t.Fatalf("Get = %v, want an (empty) output_literals", out)
		}
	})

	t.Run("JSON", func(t *testing.T) {
		jc, id := srv.flyteProtocols(t)[2].client, flyteIdentifier(t)
		req := flytePutURI(id, "k", "", false)
		req.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: &flytecore.LiteralMap{}}
		_, err := jc.Put(callCtx(t), connect.NewRequest(req))
		wantCode(t, err, connect.CodeInvalidArgument)
		if !strings.Contains(err.Error(), "output_literals") {
			t.Errorf("error %q does not name output_literals", err)
		}
		_, err = jc.Get(callCtx(t), flyteGet(id, "k"))
		wantCode(t, err, connect.CodeNotFound) // nothing half-stored

		// Written over binary, a literal entry reads over JSON as an empty
		// object: JSON callers see that there are literals, not what they are.
		req.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: literalMapOf(t, want)}
		if _, err := srv.flyteProtocols(t)[0].client.Put(callCtx(t), connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
		status, body := httpDo(t, http.MethodPost, srv.url+flytecachev2connect.CacheServiceGetProcedure, "application/json",
			fmt.Sprintf(`{"identifier":{"org":%q,"project":%q,"domain":%q},"baseRequest":{"key":"k"}}`, id.Org, id.Project, id.Domain))
		if status != http.StatusOK || !strings.Contains(body, `"outputLiterals":{}`) || !strings.Contains(body, `"sourceIdentifier"`) {
			t.Fatalf("JSON Get = %d %s", status, body)
		}
	})
}

func TestFlyteLiteralsObeyMaxInlineBytes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-inline-bytes", "1KiB")
	c, id := srv.flyteProtocols(t)[0].client, flyteIdentifier(t)
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendBytes(entry, make([]byte, 1100))
	req := flytePutURI(id, "k", "", false)
	req.BaseRequest.Output.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: literalMapOf(t, entry)}
	_, err := c.Put(callCtx(t), connect.NewRequest(req))
	wantCode(t, err, connect.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "base_request.output.output_literals") {
		t.Errorf("error %q does not name the field", err)
	}
	_, err = c.Get(callCtx(t), flyteGet(id, "k"))
	wantCode(t, err, connect.CodeNotFound)
}

// TestFlyteAndOurAPIShareEntries: one entry, two views, both ways.
func TestFlyteAndOurAPIShareEntries(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	flyte := srv.flyteProtocols(t)[0].client
	ours := cachev1connect.NewCacheServiceClient(h2cClient(t), srv.url, connect.WithGRPC())
	id := flyteIdentifier(t)
	sc := &cachev1.Scope{Org: id.Org, Project: id.Project, Domain: id.Domain}
	ourGet := func(key string) (*connect.Response[cachev1.GetResponse], error) {
		return ours.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: key}))
	}

	t.Run("Flyte writes, we read", func(t *testing.T) {
		if _, err := flyte.Put(callCtx(t), connect.NewRequest(flytePutURI(id, "f", "s3://b/f", false))); err != nil {
			t.Fatal(err)
		}
		res, err := ourGet("f")
		if err != nil {
			t.Fatal(err)
		}
		out := res.Msg.GetOutput()
		if out.GetUri() != "s3://b/f" || out.GetMetadata().GetSource().GetName() != "wf.train" ||
			out.GetMetadata().GetSource().GetVersion() != "v-7f3a" || out.GetMetadata().GetLabels()["execution-name"] != "a1b2c3" {
			t.Fatalf("our Get = %v", out)
		}
		// Another org with the same project, domain and key is another entry.
		other := &cachev1.Scope{Org: "org-b", Project: id.Project, Domain: id.Domain}
		_, err = ours.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: other, Key: "f"}))
		wantCode(t, err, connect.CodeNotFound)
	})

	t.Run("we write, Flyte reads what it can", func(t *testing.T) {
		for _, tc := range []struct {
			key string
			out *cachev1.CachedOutput
		}{
			{"uri-with-source", &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://b/o"},
				Metadata: &cachev1.Metadata{Source: &cachev1.Source{Name: "n", Version: "v"}}}},
			{"inline", &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: deepLiterals()}}},
		} {
			if _, err := ours.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: tc.key, Output: tc.out})); err != nil {
				t.Fatal(err)
			}
			// Flyte's client would refuse these hits (no source identifier,
			// inline bytes not known to be a LiteralMap): a miss for it.
			_, err := flyte.Get(callCtx(t), flyteGet(id, tc.key))
			wantCode(t, err, connect.CodeNotFound)
			// The entry is still there: a non-overwriting Put is refused, and
			// Flyte's Update replaces it.
			_, err = flyte.Put(callCtx(t), connect.NewRequest(flytePutURI(id, tc.key, "s3://b/flyte", false)))
			wantCode(t, err, connect.CodeAlreadyExists)
			if _, err := flyte.Put(callCtx(t), connect.NewRequest(flytePutURI(id, tc.key, "s3://b/flyte", true))); err != nil {
				t.Fatal(err)
			}
			if out := wantFlyteHit(t)(flyte.Get(callCtx(t), flyteGet(id, tc.key))); out.GetOutputUri() != "s3://b/flyte" {
				t.Fatalf("%s: after Flyte's overwrite: %v", tc.key, out)
			}
		}
		// Our overwrite of a Flyte entry drops Flyte's source identifier.
		if _, err := ours.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: "f", Overwrite: true,
			Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://b/ours"}}})); err != nil {
			t.Fatal(err)
		}
		_, err := flyte.Get(callCtx(t), flyteGet(id, "f"))
		wantCode(t, err, connect.CodeNotFound)
	})

	t.Run("reservations", func(t *testing.T) {
		if _, err := flyte.GetOrExtendReservation(callCtx(t), flyteReserve(id, "r", "flyte-owner", time.Second)); err != nil {
			t.Fatal(err)
		}
		res, err := ours.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "r", OwnerId: "our-owner"}))
		if err != nil || res.Msg.GetReservation().GetOwnerId() != "flyte-owner" {
			t.Fatalf("our claim = %v, %v; want Flyte's owner", res, err)
		}
		if _, err := flyte.ReleaseReservation(callCtx(t), flyteRelease(id, "r", "flyte-owner")); err != nil {
			t.Fatal(err)
		}
		res, err = ours.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{Scope: sc, Key: "r", OwnerId: "our-owner"}))
		if err != nil || res.Msg.GetReservation().GetOwnerId() != "our-owner" {
			t.Fatalf("our claim after Flyte's release = %v, %v", res, err)
		}
		fr, err := flyte.GetOrExtendReservation(callCtx(t), flyteReserve(id, "r", "flyte-owner", time.Second))
		if err != nil || fr.Msg.GetReservation().GetOwnerId() != "our-owner" {
			t.Fatalf("Flyte's claim = %v, %v; want our owner", fr, err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if _, err := flyte.Delete(callCtx(t), connect.NewRequest(&flytecachev2.DeleteCacheRequest{Identifier: id, BaseRequest: &flytecache.DeleteCacheRequest{Key: "inline"}})); err != nil {
			t.Fatal(err)
		}
		_, err := ourGet("inline")
		wantCode(t, err, connect.CodeNotFound)
	})
}

// TestFlyteSourceIdentifierIsKeptWhole: every field of the source
// identifier, an enum value no Flyte release knows included, comes back.
func TestFlyteSourceIdentifierIsKeptWhole(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, p := range srv.flyteProtocols(t)[:2] {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			id := flyteIdentifier(t)
			for i, rt := range []flytecore.ResourceType{flytecore.ResourceType_UNSPECIFIED, flytecore.ResourceType_DATASET, 77} {
				src := &flytecore.Identifier{ResourceType: rt, Project: "p-x", Domain: "d-y", Name: "n", Version: "v", Org: "o-z"}
				req := flytePutURI(id, fmt.Sprint(i), "s3://b", false)
				req.BaseRequest.Output.Metadata.SourceIdentifier = src
				if _, err := p.client.Put(callCtx(t), connect.NewRequest(req)); err != nil {
					t.Fatal(err)
				}
				out := wantFlyteHit(t)(p.client.Get(callCtx(t), flyteGet(id, fmt.Sprint(i))))
				if !proto.Equal(out.GetMetadata().GetSourceIdentifier(), src) {
					t.Fatalf("source = %v, want %v", out.GetMetadata().GetSourceIdentifier(), src)
				}
			}
		})
	}
}

// TestFlyteRaces: 64 concurrent claimants get exactly one owner; concurrent
// non-overwriting Puts have exactly one winner, whose value is stored. Many
// trials, each behind one barrier.
func TestFlyteRaces(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--db-max-conns", "20")
	protocols := srv.flyteProtocols(t)[:2]
	const trials, claimants, putters = 12, 64, 16
	id := flyteIdentifier(t)
	for trial := range trials {
		c := protocols[trial%len(protocols)].client
		key := fmt.Sprintf("claim-%d", trial)
		owners := make([]string, claimants)
		errs := make([]error, claimants)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range claimants {
			wg.Go(func() {
				<-start
				res, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, key, fmt.Sprintf("owner-%d", i), 5*time.Second))
				errs[i] = err
				owners[i] = res.Msg.GetReservation().GetOwnerId()
			})
		}
		close(start)
		wg.Wait()
		self := 0
		for i := range claimants {
			if errs[i] != nil {
				t.Fatalf("trial %d claimant %d: %v", trial, i, errs[i])
			}
			if owners[i] != owners[0] {
				t.Fatalf("trial %d: claimants saw owners %q and %q", trial, owners[0], owners[i])
			}
			if owners[i] == fmt.Sprintf("owner-%d", i) {
				self++
			}
		}
		if self != 1 {
			t.Fatalf("trial %d: %d claimants own the key, want 1", trial, self)
		}

		key = fmt.Sprintf("put-%d", trial)
		won := make([]bool, putters)
		start = make(chan struct{})
		for i := range putters {
			wg.Go(func() {
				<-start
				_, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, key, fmt.Sprintf("s3://b/%d", i), false)))
				switch {
				case err == nil:
					won[i] = true
				case connect.CodeOf(err) == connect.CodeAlreadyExists:
				default:
					t.Errorf("trial %d putter %d: %v", trial, i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		winners := []int{}
		for i, w := range won {
			if w {
				winners = append(winners, i)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("trial %d: %d Puts succeeded, want 1", trial, len(winners))
		}
		out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, key)))
		if want := fmt.Sprintf("s3://b/%d", winners[0]); out.GetOutputUri() != want {
			t.Fatalf("trial %d: stored %q, want the winner's %q", trial, out.GetOutputUri(), want)
		}
	}
}

// TestFlyteDeleteBlobIsRefused: we do not own blobs, so a Put asking us to
// delete one is refused by field name and changes nothing.
func TestFlyteDeleteBlobIsRefused(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, p := range srv.flyteProtocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c, id := p.client, flyteIdentifier(t)
			if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, "k", "s3://b/old", false))); err != nil {
				t.Fatal(err)
			}
			req := flytePutURI(id, "k", "s3://b/new", true)
			req.BaseRequest.Overwrite.DeleteBlob = true
			_, err := c.Put(callCtx(t), connect.NewRequest(req))
			wantCode(t, err, connect.CodeInvalidArgument)
			if !strings.Contains(err.Error(), "base_request.overwrite.delete_blob") {
				t.Errorf("error %q does not name delete_blob", err)
			}
			if out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, "k"))); out.GetOutputUri() != "s3://b/old" {
				t.Fatalf("entry changed to %v", out)
			}
		})
	}
}

// TestFlyteZeroMaxAgeIsAccepted: Flyte's service takes a set zero max_age
// (every entry is older than zero, so it replaces), and so must the wire
// rule, over every protocol.
func TestFlyteZeroMaxAgeIsAccepted(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, p := range srv.flyteProtocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c, id := p.client, flyteIdentifier(t)
			if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, "k", "s3://b/old", false))); err != nil {
				t.Fatal(err)
			}
			req := flytePutURI(id, "k", "s3://b/new", false)
			req.BaseRequest.Overwrite.MaxAge = durationpb.New(0)
			if _, err := c.Put(callCtx(t), connect.NewRequest(req)); err != nil {
				t.Fatalf("Put with max_age 0: %v", err)
			}
			if out := wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, "k"))); out.GetOutputUri() != "s3://b/new" {
				t.Fatalf("Get = %v; want s3://b/new", out)
			}
		})
	}
}

func TestFlyteBadRequestsNameTheField(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-heartbeat", "10s")
	good := func() *flytecachev2.PutCacheRequest {
		return flytePutURI(&flytecachev2.Identifier{Org: "o", Project: "p", Domain: "d"}, "k", "s3://b", false)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*flytecachev2.PutCacheRequest)
		field string
	}{
		{"no identifier", func(r *flytecachev2.PutCacheRequest) { r.Identifier = nil }, "identifier"},
		{"no org", func(r *flytecachev2.PutCacheRequest) { r.Identifier.Org = "" }, "identifier.org"},
		{"no base_request", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest = nil }, "base_request"},
		{"empty key", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Key = "" }, "base_request.key"},
		// The identity rules every scope part, key and owner id carries.
		{"long key", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Key = strings.Repeat("k", 1025) }, "base_request.key: must be at most 1024 characters"},
		{"control character in project", func(r *flytecachev2.PutCacheRequest) { r.Identifier.Project = "p\x01" }, "identifier.project: does not match regex pattern"},
		{"long domain", func(r *flytecachev2.PutCacheRequest) { r.Identifier.Domain = strings.Repeat("d", 256) }, "identifier.domain: must be at most 255 characters"},
		{"no output", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Output.Output = nil }, "base_request.output"},
		{"no metadata", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Output.Metadata = nil }, "base_request.output.metadata"},
		{"no source", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Output.Metadata.SourceIdentifier = nil }, "base_request.output.metadata.source_identifier"},
		{"long label key", func(r *flytecachev2.PutCacheRequest) {
			r.BaseRequest.Output.Metadata.KeyMap.Values[strings.Repeat("k", 64)] = "v"
		}, "base_request.output.metadata.key_map.values"},
		{"negative max_age", func(r *flytecachev2.PutCacheRequest) { r.BaseRequest.Overwrite.MaxAge = durationpb.New(-time.Second) }, "base_request.overwrite.max_age"},
	} {
		for _, p := range srv.flyteProtocols(t)[:2] {
			req := good()
			tc.edit(req)
			_, err := p.client.Put(callCtx(t), connect.NewRequest(req))
			wantCode(t, err, connect.CodeInvalidArgument)
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("%s over %s: error %q does not name %s", tc.name, p.name, err, tc.field)
			}
		}
	}

	c, id := srv.flyteProtocols(t)[0].client, flyteIdentifier(t)
	_, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, "k", "o", -time.Second))
	wantCode(t, err, connect.CodeInvalidArgument)
	// Zero means "the server's maximum", as in Flyte's own service.
	res, err := c.GetOrExtendReservation(callCtx(t), flyteReserve(id, "k", "o", 0))
	if err != nil || res.Msg.GetReservation().GetHeartbeatInterval().AsDuration() != 10*time.Second {
		t.Fatalf("zero heartbeat: %v, %v; want the 10s maximum", res, err)
	}
}

// TestFlyteCallsAreLoggedMeteredAndReflected: failures are logged under
// Flyte's procedure names, metrics count them per procedure (and Flyte's
// Gets as lookups), traces name them, and reflection and health know Flyte's
// service.
func TestFlyteCallsAreLoggedMeteredAndReflected(t *testing.T) {
	recv := otlptest.NewReceiver(t)
	srv := startServer(t, "--sweep-interval=0", "--otlp-endpoint", recv.URL)
	c, id := srv.flyteProtocols(t)[0].client, flyteIdentifier(t)
	before := metricstest.Scrape(t, srv.url+"/metrics")
	_, err := c.Get(callCtx(t), flyteGet(id, "k"))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := c.Put(callCtx(t), connect.NewRequest(flytePutURI(id, "k", "s3://b", false))); err != nil {
		t.Fatal(err)
	}
	wantFlyteHit(t)(c.Get(callCtx(t), flyteGet(id, "k")))
	after := metricstest.Scrape(t, srv.url+"/metrics")
	for _, tt := range []struct {
		key  string
		want float64
	}{
		{metricstest.Key("cacheservice_rpc_requests_total", "code", "ok", "procedure", flytecachev2connect.CacheServiceGetProcedure), 1},
		{metricstest.Key("cacheservice_rpc_requests_total", "code", "not_found", "procedure", flytecachev2connect.CacheServiceGetProcedure), 1},
		{metricstest.Key("cacheservice_rpc_requests_total", "code", "ok", "procedure", flytecachev2connect.CacheServicePutProcedure), 1},
		{metricstest.Key("cacheservice_cache_lookups_total", "result", "hit"), 1},
		{metricstest.Key("cacheservice_cache_lookups_total", "result", "miss"), 1},
	} {
		if got := after[tt.key] - before[tt.key]; got != tt.want {
			t.Errorf("%s moved by %v, want %v", tt.key, got, tt.want)
		}
	}
	waitFor(t, 5*time.Second, "the failure line", func() bool {
		return strings.Contains(srv.logs.String(), "procedure="+flytecachev2connect.CacheServiceGetProcedure+" protocol=connect code=not_found")
	})

	// Health answers for Flyte's service by name, as for ours.
	if res, err := grpchealth.NewClient(h2cClient(t), srv.url, connect.WithGRPC()).Check(callCtx(t),
		&grpchealth.CheckRequest{Service: flytecachev2connect.CacheServiceName}); err != nil || res.Status != grpchealth.StatusServing {
		t.Errorf("health of %s = %v, %v", flytecachev2connect.CacheServiceName, res, err)
	}

	// Reflection: the raw v1 request of TestReflectionListsServices.
	req, err := http.NewRequestWithContext(callCtx(t), http.MethodPost,
		srv.url+"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", bytes.NewReader(grpcFrame([]byte{7<<3 | 2, 0})))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !bytes.Contains(body, []byte(flytecachev2connect.CacheServiceName)) {
		t.Errorf("reflection does not list %s: %q", flytecachev2connect.CacheServiceName, body)
	}

	srv.stop() // flushes the spans
	for _, name := range []string{"flyteidl2.cacheservice.v2.CacheService/Get", "flyteidl2.cacheservice.v2.CacheService/Put"} {
		if recv.Span(name) == nil {
			t.Errorf("no %s span received (requests to %v)", name, recv.Paths())
		}
	}
}
