package manager_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

type flyteBundle struct {
	manager *manager.Manager
	conn    *pgx.Conn // for writing rows as the previous version does
	store   *store.Store
	url     string
}

func setupFlyte(t *testing.T) *flyteBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 4, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &flyteBundle{manager: manager.New(st, manager.DefaultConfig(), nil), conn: conn, store: st, url: url}
}

var flyteID = &flytecachev2.Identifier{Org: "org", Project: "project", Domain: "development"}

func flytePut(key, uri string, overwrite *flytecache.OverwriteOutput) *flytecachev2.PutCacheRequest {
	return &flytecachev2.PutCacheRequest{Identifier: flyteID, BaseRequest: &flytecache.PutCacheRequest{
		Key: key,
		Output: &flytecache.CachedOutput{Output: &flytecache.CachedOutput_OutputUri{OutputUri: uri}, Metadata: &flytecache.Metadata{
			SourceIdentifier: &flytecore.Identifier{ResourceType: flytecore.ResourceType_TASK, Name: "n", Version: "v"},
			// Sent by Flyte's client; the server's clock wins.
			CreatedAt: timestamppb.New(time.Unix(0, 0)),
		}},
		Overwrite: overwrite,
	}}
}

func (b *flyteBundle) get(t *testing.T, key string) (*flytecache.CachedOutput, error) {
	t.Helper()
	res, err := b.manager.FlyteGet(t.Context(), &flytecachev2.GetCacheRequest{Identifier: flyteID, BaseRequest: &flytecache.GetCacheRequest{Key: key}})
	return res.GetOutput(), err
}

func TestFlytePutKeepsCreatedAtAndAppliesMaxAge(t *testing.T) {
	t.Parallel()
	b := setupFlyte(t)
	if _, err := b.manager.FlytePut(t.Context(), flytePut("k", "s3://1", nil)); err != nil {
		t.Fatal(err)
	}
	first, err := b.get(t, "k")
	if err != nil {
		t.Fatal(err)
	}
	t0 := first.GetMetadata().GetCreatedAt().AsTime()
	// An hour on, by the database's clock.
	pgtest.SetClockOffset(t, b.url, time.Hour, b.store.Pool())
	// Younger than max_age: kept.
	_, err = b.manager.FlytePut(t.Context(), flytePut("k", "s3://2", &flytecache.OverwriteOutput{MaxAge: durationpb.New(2 * time.Hour)}))
	wantCode(t, err, connect.CodeAlreadyExists)
	// Older than max_age: replaced, created_at kept.
	if _, err := b.manager.FlytePut(t.Context(), flytePut("k", "s3://3", &flytecache.OverwriteOutput{MaxAge: durationpb.New(30 * time.Minute)})); err != nil {
		t.Fatal(err)
	}
	out, err := b.get(t, "k")
	if err != nil {
		t.Fatal(err)
	}
	md := out.GetMetadata()
	if updated := md.GetLastUpdatedAt().AsTime(); out.GetOutputUri() != "s3://3" || !md.GetCreatedAt().AsTime().Equal(t0) ||
		updated.Before(t0.Add(time.Hour)) || updated.After(t0.Add(time.Hour+time.Minute)) {
		t.Fatalf("Get = %v; want s3://3 created %v updated an hour later", out, t0)
	}
}

// TestFlyteGetDistrustsSourceAfterPreviousVersionOverwrite: a replica of the
// previous version overwrites the entry without knowing flyte_source; the
// stale identifier must not be served as the new output's source, even when
// that write is of the same task (it is a cacheservice.v1 write, which has
// no Flyte source, so Flyte's API misses).
func TestFlyteGetDistrustsSourceAfterPreviousVersionOverwrite(t *testing.T) {
	t.Parallel()
	b := setupFlyte(t)
	for _, key := range []string{"renamed", "same"} {
		if _, err := b.manager.FlytePut(t.Context(), flytePut(key, "s3://new-version", nil)); err != nil {
			t.Fatal(err)
		}
	}
	// The columns the previous version's Put writes, last_updated_at among
	// them.
	for key, name := range map[string]string{"renamed": "other-task", "same": "n"} {
		if _, err := b.conn.Exec(t.Context(), `UPDATE cache_entries SET output_uri = 's3://old-version', source_name = $2,
			last_updated_at = cache_now() WHERE key = $1`, key, name); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"renamed", "same"} {
		_, err := b.get(t, key)
		wantCode(t, err, connect.CodeNotFound)
	}
}

// TestFlytePutZeroMaxAgeReplaces: Flyte's service replaces an entry older
// than max_age, and every entry is older than zero, so a set zero max_age
// replaces what is there (our own API refuses zero).
func TestFlytePutZeroMaxAgeReplaces(t *testing.T) {
	t.Parallel()
	b := setupFlyte(t)
	if _, err := b.manager.FlytePut(t.Context(), flytePut("k", "s3://1", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.manager.FlytePut(t.Context(), flytePut("k", "s3://2", &flytecache.OverwriteOutput{MaxAge: durationpb.New(0)})); err != nil {
		t.Fatalf("Put with max_age 0: %v", err)
	}
	if out, err := b.get(t, "k"); err != nil || out.GetOutputUri() != "s3://2" {
		t.Fatalf("Get = %v, %v; want s3://2", out, err)
	}
	// Unset max_age and no overwrite, as Flyte's executor sends: refused.
	_, err := b.manager.FlytePut(t.Context(), flytePut("k", "s3://3", &flytecache.OverwriteOutput{}))
	wantCode(t, err, connect.CodeAlreadyExists)
}
