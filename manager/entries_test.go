package manager_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/manager"
)

func (b *testBundle) put(t *testing.T, req *cachev1.PutRequest) error {
	t.Helper()
	_, err := b.manager.Put(b.ctx, req)
	return err
}

func (b *testBundle) get(t *testing.T, key string) *cachev1.CachedOutput {
	t.Helper()
	res, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: scope(), Key: key})
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return res.GetOutput()
}

func TestGetMissingIsNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: scope(), Key: "missing"})
	wantCode(t, err, connect.CodeNotFound)
}

func TestPutThenGetReturnsOutputAndServerTimestamps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.clock.Shift(t, 1000*time.Hour) // the database's clock stamps it, not ours
	t0 := time.Now()
	out := &cachev1.CachedOutput{
		Value: &cachev1.CachedOutput_Inline{Inline: []byte("result")},
		Metadata: &cachev1.Metadata{
			Source: &cachev1.Source{Name: "train", Version: "1.2"},
			Labels: map[string]string{"team": "ml"},
			// The server owns these; the client's values are ignored.
			CreatedAt:     timestamppb.New(t0.Add(-time.Hour)),
			LastUpdatedAt: timestamppb.New(t0.Add(time.Hour)),
		},
	}
	before := b.clock.Now(t)
	if err := b.put(t, &cachev1.PutRequest{Scope: scope(), Key: "k", Output: out}); err != nil {
		t.Fatalf("put: %v", err)
	}
	after := b.clock.Now(t)
	got := b.get(t, "k")
	if !bytes.Equal(got.GetInline(), []byte("result")) {
		t.Errorf("inline = %q", got.GetInline())
	}
	if !proto.Equal(got.GetMetadata().GetSource(), out.Metadata.Source) || got.GetMetadata().GetLabels()["team"] != "ml" {
		t.Errorf("metadata = %v", got.GetMetadata())
	}
	c, u := got.GetMetadata().GetCreatedAt().AsTime(), got.GetMetadata().GetLastUpdatedAt().AsTime()
	if !c.Equal(u) {
		t.Errorf("timestamps = %v, %v; want both the same", c, u)
	}
	wantBetween(t, "created_at", c, before, after)
}

func TestPutEmptyInlineOutputIsStored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.put(t, &cachev1.PutRequest{Scope: scope(), Key: "k", Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{}}}); err != nil {
		t.Fatalf("put: %v", err)
	}
	got := b.get(t, "k")
	if _, ok := got.GetValue().(*cachev1.CachedOutput_Inline); !ok || len(got.GetInline()) != 0 {
		t.Fatalf("value = %#v, want an empty inline output", got.GetValue())
	}
}

// TestPutOntoExistingEntry writes an entry, moves the database's clock an
// hour on, and writes again.
func TestPutOntoExistingEntry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		req      *cachev1.PutRequest
		replaced bool
	}{
		{"without overwrite is refused", &cachev1.PutRequest{}, false},
		{"with overwrite replaces", &cachev1.PutRequest{Overwrite: true}, true},
		{"with max_age shorter than the entry's age replaces", &cachev1.PutRequest{MaxAge: durationpb.New(59 * time.Minute)}, true},
		{"with max_age just over the entry's age is refused", &cachev1.PutRequest{MaxAge: durationpb.New(time.Hour + time.Minute)}, false},
		{"with max_age longer than the entry's age is refused", &cachev1.PutRequest{MaxAge: durationpb.New(2 * time.Hour)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if err := b.put(t, &cachev1.PutRequest{Scope: scope(), Key: "k", Output: uriOutput("first")}); err != nil {
				t.Fatalf("first put: %v", err)
			}
			t0 := b.get(t, "k").GetMetadata().GetLastUpdatedAt().AsTime()
			b.clock.Shift(t, time.Hour)
			before := b.clock.Now(t)
			req := proto.CloneOf(tc.req)
			req.Scope, req.Key, req.Output = scope(), "k", uriOutput("second")
			err := b.put(t, req)
			got := b.get(t, "k")
			meta := got.GetMetadata()
			if !tc.replaced {
				wantCode(t, err, connect.CodeAlreadyExists)
				if got.GetUri() != "first" || !meta.GetLastUpdatedAt().AsTime().Equal(t0) {
					t.Fatalf("a refused put changed the entry: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if got.GetUri() != "second" {
				t.Errorf("uri = %q, want second", got.GetUri())
			}
			if !meta.GetCreatedAt().AsTime().Equal(t0) {
				t.Errorf("created_at = %v, want %v (kept)", meta.GetCreatedAt().AsTime(), t0)
			}
			wantBetween(t, "last_updated_at", meta.GetLastUpdatedAt().AsTime(), before, b.clock.Now(t))
		})
	}
}

func TestPutInvalidInputStoresNothing(t *testing.T) {
	t.Parallel()
	cfg := manager.DefaultConfig()
	cfg.MaxInlineBytes = 8
	b := setupWith(t, cfg)
	cases := map[string]*cachev1.PutRequest{
		"inline over the limit": {Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: make([]byte, 9)}}},
		"no output":             {},
		"zero max_age":          {Output: uriOutput("u"), MaxAge: durationpb.New(0)},
		"negative max_age":      {Output: uriOutput("u"), MaxAge: durationpb.New(-time.Second)},
	}
	for name, req := range cases {
		req.Scope, req.Key = scope(), "k"
		err := b.put(t, req)
		wantCode(t, err, connect.CodeInvalidArgument)
		if name == "inline over the limit" && !strings.Contains(err.Error(), "output.inline") {
			t.Errorf("%s: message %q does not name output.inline", name, err)
		}
	}
	_, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: scope(), Key: "k"})
	wantCode(t, err, connect.CodeNotFound)
	// The limit itself is allowed.
	ok := &cachev1.PutRequest{Scope: scope(), Key: "k", Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: make([]byte, 8)}}}
	if err := b.put(t, ok); err != nil {
		t.Fatalf("put at the limit: %v", err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.put(t, &cachev1.PutRequest{Scope: scope(), Key: "k", Output: uriOutput("u")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.manager.Delete(b.ctx, &cachev1.DeleteRequest{Scope: scope(), Key: "k"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: scope(), Key: "k"})
	wantCode(t, err, connect.CodeNotFound)
	_, err = b.manager.Delete(b.ctx, &cachev1.DeleteRequest{Scope: scope(), Key: "k"})
	wantCode(t, err, connect.CodeNotFound)
}

// TestScopesThatJoinAlikeStayApart is the collision pair of
// docs/ARCHITECTURE.md ("Identity").
func TestScopesThatJoinAlikeStayApart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := &cachev1.Scope{Org: "a-b", Project: "c", Domain: "d"}
	second := &cachev1.Scope{Org: "a", Project: "b-c", Domain: "d"}
	for s, uri := range map[*cachev1.Scope]string{first: "first", second: "second"} {
		if err := b.put(t, &cachev1.PutRequest{Scope: s, Key: "k", Output: uriOutput(uri)}); err != nil {
			t.Fatalf("put %v: %v", s, err)
		}
	}
	for s, uri := range map[*cachev1.Scope]string{first: "first", second: "second"} {
		res, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: s, Key: "k"})
		if err != nil || res.GetOutput().GetUri() != uri {
			t.Errorf("get %v = %v, %v; want %s", s, res.GetOutput(), err, uri)
		}
	}
	if _, err := b.manager.Delete(b.ctx, &cachev1.DeleteRequest{Scope: first, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if res, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: second, Key: "k"}); err != nil || res.GetOutput().GetUri() != "second" {
		t.Fatalf("deleting one scope's entry touched the other: %v, %v", res, err)
	}
}

// TestConcurrentPutsToNewKeyExactlyOneWins starts 32 writers of different
// values behind one barrier, over many trials.
func TestConcurrentPutsToNewKeyExactlyOneWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const writers, trials = 32, 20
	for trial := range trials {
		key := fmt.Sprintf("k%d", trial)
		start := make(chan struct{})
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				<-start
				errs[w] = b.put(t, &cachev1.PutRequest{Scope: scope(), Key: key, Output: uriOutput(fmt.Sprintf("value-%d", w))})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("trial %d: writers %d and %d both succeeded", trial, winner, w)
			case err == nil:
				winner = w
			case connect.CodeOf(err) != connect.CodeAlreadyExists:
				t.Fatalf("trial %d: writer %d: %v, want already_exists", trial, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("trial %d: no writer succeeded", trial)
		}
		if got := b.get(t, key).GetUri(); got != fmt.Sprintf("value-%d", winner) {
			t.Fatalf("trial %d: stored %q, want the winner's value-%d", trial, got, winner)
		}
	}
}
