package flyteimport_test

import (
	"context"
	_ "embed"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/internal/flyteimport"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// The template stays empty: a source database must hold Flyte's layout only
// (Flyte's schema_migrations would clash with ours), and destinations are
// migrated per test.
func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, nil))
}

//go:embed testdata/flyte_schema.sql
var flyteSchema string

var (
	t0 = time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC)
	t1 = t0.Add(24 * time.Hour)
	t2 = t0.Add(48 * time.Hour)
)

type testBundle struct {
	ctx     context.Context
	src     string // Flyte's database
	dst     string // ours
	srcConn *pgx.Conn
	store   *store.Store
	manager *manager.Manager
}

// setup gives a test a Flyte database, laid out as Flyte's migration lays
// it out and empty, and a fresh migrated database of ours.
func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := t.Context()
	b := &testBundle{ctx: ctx, src: pgtest.NewDatabase(t), dst: pgtest.NewDatabase(t)}
	var err error
	if b.srcConn, err = pgx.Connect(ctx, b.src); err != nil {
		t.Fatalf("connect to source: %v", err)
	}
	t.Cleanup(func() { b.srcConn.Close(context.Background()) })
	if _, err := b.srcConn.Exec(ctx, flyteSchema); err != nil {
		t.Fatalf("create Flyte's schema: %v", err)
	}
	if err := store.Migrate(ctx, b.dst); err != nil {
		t.Fatalf("migrate ours: %v", err)
	}
	if b.store, err = store.Open(ctx, store.Config{URL: b.dst, MaxConns: 4, Timeout: 30 * time.Second}); err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(b.store.Close)
	b.manager = manager.New(b.store, manager.DefaultConfig(), nil)
	return b
}

// flyteRow is a row as Flyte's service writes it.
type flyteRow struct {
	key, uri    string
	md          *flytecache.Metadata // nil: NULL
	rawMD       []byte               // used instead of md when set
	lastUpdated time.Time
	createdAt   time.Time
}

func (b *testBundle) insert(t *testing.T, rows ...flyteRow) {
	t.Helper()
	for _, r := range rows {
		md := r.rawMD
		if r.md != nil {
			var err error
			if md, err = proto.Marshal(r.md); err != nil {
				t.Fatalf("marshal metadata: %v", err)
			}
		}
		if _, err := b.srcConn.Exec(b.ctx, `
			INSERT INTO cache_service_outputs (key, output_uri, metadata, last_updated, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $4)`, r.key, r.uri, md, r.lastUpdated, r.createdAt); err != nil {
			t.Fatalf("insert %q: %v", r.key, err)
		}
	}
}

// executorMetadata is what Flyte's executor sends: its task's identifier as
// the source, the execution in the key map.
func executorMetadata(org, project, domain, name, version string, created time.Time) *flytecache.Metadata {
	return &flytecache.Metadata{
		SourceIdentifier: &flytecore.Identifier{
			ResourceType: flytecore.ResourceType_TASK,
			Org:          org, Project: project, Domain: domain, Name: name, Version: version,
		},
		KeyMap: &flytecache.KeyMapMetadata{Values: map[string]string{
			"task-version": version, "exec-project": project, "exec-domain": domain,
			"execution-name": "a1b2c3", "exec-node": "n0", "exec-attempt": "0", "exec-org": org,
		}},
		CreatedAt:     timestamppb.New(created),
		LastUpdatedAt: timestamppb.New(t2),
	}
}

// want is an entry the import must produce.
type want struct {
	source                    string // the Flyte key it comes from
	org, project, domain, key string
	uri                       string
	name, version             string
	labels                    map[string]string
	createdAt, lastUpdatedAt  time.Time
	flyteSource               *flytecore.Identifier
}

// realisticRows fills the source with rows of every kind, and returns the
// entries the import must produce and the skips it must report.
func realisticRows(t *testing.T, b *testBundle) ([]want, map[string]flyteimport.Reason) {
	t.Helper()
	exec := executorMetadata("acme", "flytesnacks", "development", "wf.train", "v7", t0)
	dashed := executorMetadata("acme-eu", "ml-team", "dev-eu", "pipe.step-1", "2026-03-01", t0)
	dashed.SourceIdentifier.ResourceType = flytecore.ResourceType_WORKFLOW
	noOrg := executorMetadata("", "solo", "production", "t", "1", t0)
	longLabel := executorMetadata("acme", "p", "d", "t", "1", t0)
	longLabel.KeyMap.Values[strings.Repeat("k", 64)] = "v"
	mismatch := executorMetadata("elsewhere", "other", "place", "t", "2", t0) // names no prefix of its key
	keyMapOnly := &flytecache.Metadata{KeyMap: &flytecache.KeyMapMetadata{Values: map[string]string{"team": "ml"}}}
	badSource := executorMetadata("acme", "p", "d", "name\x01with-control", "1", t0)
	// A source that does not place its row is still kept whole, so Flyte's
	// rules for it apply too.
	badElsewhere := executorMetadata("acme", "else\x01where", "d", "t", "1", t0)

	b.insert(t,
		flyteRow{key: "flytesnacks-development-Zm9v-abcd1234-efgh5678-HaSh-v1", uri: "s3://flyte/outputs/1", md: exec, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "ml-team-dev-eu-h-1-h2-h3", uri: "gs://bucket/o/2", md: dashed, lastUpdated: t2, createdAt: t1},
		flyteRow{key: "solo-production-k-1", uri: "s3://flyte/outputs/3", md: noOrg, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "bare-staging-k1", uri: "s3://flyte/outputs/4", lastUpdated: t2, createdAt: t1},
		flyteRow{key: "x-y-z", uri: "s3://flyte/outputs/5", md: mismatch, lastUpdated: t1, createdAt: t0},
		// Skipped:
		flyteRow{key: "a-b-c-d", uri: "s3://flyte/outputs/6", rawMD: []byte{}, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "q-r-k-k2", uri: "s3://flyte/outputs/7", md: keyMapOnly, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "nodashes", uri: "s3://flyte/outputs/8", lastUpdated: t1, createdAt: t1},
		flyteRow{key: "p-d-long-label", uri: "s3://flyte/outputs/9", md: longLabel, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "p-d-garbage", uri: "s3://flyte/outputs/10", rawMD: []byte{0xff, 0xff, 0xff}, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "flytesnacks-development-no-uri", uri: "", md: exec, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "p-d-bad\x01key", uri: "s3://flyte/outputs/12", md: executorMetadata("acme", "p", "d", "t", "1", t0), lastUpdated: t1, createdAt: t1},
		flyteRow{key: "p-d-bad-source", uri: "s3://flyte/outputs/13", md: badSource, lastUpdated: t1, createdAt: t1},
		flyteRow{key: "m-n-o", uri: "s3://flyte/outputs/14", md: badElsewhere, lastUpdated: t1, createdAt: t1},
	)
	if _, err := b.srcConn.Exec(b.ctx, `
		INSERT INTO cache_service_reservations (key, owner_id, heartbeat_seconds, expires_at)
		VALUES ('reservation:flytesnacks-development-k', 'worker-1', 10, now() + interval '30 seconds'),
		       ('reservation:p-d-k', 'worker-2', 10, now() + interval '30 seconds')`); err != nil {
		t.Fatalf("insert reservations: %v", err)
	}
	entries := []want{
		{source: "flytesnacks-development-Zm9v-abcd1234-efgh5678-HaSh-v1", org: "acme", project: "flytesnacks", domain: "development",
			key: "Zm9v-abcd1234-efgh5678-HaSh-v1", uri: "s3://flyte/outputs/1", name: "wf.train", version: "v7",
			labels: exec.KeyMap.Values, createdAt: t0, lastUpdatedAt: t1, flyteSource: exec.SourceIdentifier},
		{source: "ml-team-dev-eu-h-1-h2-h3", org: "acme-eu", project: "ml-team", domain: "dev-eu", key: "h-1-h2-h3",
			uri: "gs://bucket/o/2", name: "pipe.step-1", version: "2026-03-01",
			labels: dashed.KeyMap.Values, createdAt: t0, lastUpdatedAt: t2, flyteSource: dashed.SourceIdentifier},
		// The metadata names no org: --org does.
		{source: "solo-production-k-1", org: "fallback", project: "solo", domain: "production", key: "k-1",
			uri: "s3://flyte/outputs/3", name: "t", version: "1", labels: noOrg.KeyMap.Values, createdAt: t0, lastUpdatedAt: t1,
			flyteSource: noOrg.SourceIdentifier},
		// No metadata: the key reads one way only; created_at is the row's.
		{source: "bare-staging-k1", org: "fallback", project: "bare", domain: "staging", key: "k1",
			uri: "s3://flyte/outputs/4", createdAt: t1, lastUpdatedAt: t2},
		// The source names another place, so it does not place the row; the
		// key reads one way only. What it says is kept, its org included.
		{source: "x-y-z", org: "elsewhere", project: "x", domain: "y", key: "z",
			uri: "s3://flyte/outputs/5", name: "t", version: "2", labels: mismatch.KeyMap.Values, createdAt: t0, lastUpdatedAt: t1,
			flyteSource: mismatch.SourceIdentifier},
	}
	skips := map[string]flyteimport.Reason{
		"a-b-c-d":                        flyteimport.ReasonAmbiguousKey,
		"q-r-k-k2":                       flyteimport.ReasonAmbiguousKey,
		"nodashes":                       flyteimport.ReasonUnsplittableKey,
		"p-d-long-label":                 flyteimport.ReasonOverLimit,
		"p-d-garbage":                    flyteimport.ReasonBadMetadata,
		"flytesnacks-development-no-uri": flyteimport.ReasonNoOutput,
		"p-d-bad\x01key":                 flyteimport.ReasonOverLimit,
		"p-d-bad-source":                 flyteimport.ReasonOverLimit,
		"m-n-o":                          flyteimport.ReasonOverLimit,
	}
	return entries, skips
}

// run imports with the hooks recording every skip.
func (b *testBundle) run(t *testing.T, cfg flyteimport.Config) (flyteimport.Summary, map[string]flyteimport.Skipped) {
	t.Helper()
	cfg.From = b.src
	skipped := map[string]flyteimport.Skipped{}
	sum, err := flyteimport.Run(b.ctx, b.store, cfg, flyteimport.Hooks{Skip: func(s flyteimport.Skipped) {
		if _, dup := skipped[s.Key]; dup {
			t.Errorf("row %q reported twice", s.Key)
		}
		skipped[s.Key] = s
	}})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return sum, skipped
}

// assertEntries reads every expected entry back through the manager.
func (b *testBundle) assertEntries(t *testing.T, entries []want) {
	t.Helper()
	for _, w := range entries {
		res, err := b.manager.Get(b.ctx, &cachev1.GetRequest{
			Scope: &cachev1.Scope{Org: w.org, Project: w.project, Domain: w.domain}, Key: w.key})
		if err != nil {
			t.Errorf("%s: get: %v", w.source, err)
			continue
		}
		out := res.GetOutput()
		md := out.GetMetadata()
		if out.GetUri() != w.uri {
			t.Errorf("%s: uri = %q, want %q", w.source, out.GetUri(), w.uri)
		}
		if md.GetSource().GetName() != w.name || md.GetSource().GetVersion() != w.version {
			t.Errorf("%s: source = %v, want %q %q", w.source, md.GetSource(), w.name, w.version)
		}
		if !maps.Equal(md.GetLabels(), w.labels) {
			t.Errorf("%s: labels = %v, want %v", w.source, md.GetLabels(), w.labels)
		}
		if c := md.GetCreatedAt().AsTime(); !c.Equal(w.createdAt) {
			t.Errorf("%s: created_at = %v, want %v", w.source, c, w.createdAt)
		}
		if u := md.GetLastUpdatedAt().AsTime(); !u.Equal(w.lastUpdatedAt) {
			t.Errorf("%s: last_updated_at = %v, want %v", w.source, u, w.lastUpdatedAt)
		}
		b.assertFlyteView(t, w)
	}
}

// assertFlyteView reads an expected entry through Flyte's API as we serve
// it: a row with a source identifier answers with all of it, as Flyte's
// service did; one without is a miss there (Flyte's client refuses a hit
// without a source), though it exists.
func (b *testBundle) assertFlyteView(t *testing.T, w want) {
	t.Helper()
	res, err := b.manager.FlyteGet(b.ctx, &flytecachev2.GetCacheRequest{
		BaseRequest: &flytecache.GetCacheRequest{Key: w.key},
		Identifier:  &flytecachev2.Identifier{Org: w.org, Project: w.project, Domain: w.domain},
	})
	if w.flyteSource == nil {
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: Flyte's Get = %v, %v; want not_found without a source identifier", w.source, res, err)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: Flyte's Get: %v", w.source, err)
		return
	}
	out := res.GetOutput()
	if out.GetOutputUri() != w.uri || !proto.Equal(out.GetMetadata().GetSourceIdentifier(), w.flyteSource) ||
		!maps.Equal(out.GetMetadata().GetKeyMap().GetValues(), w.labels) ||
		!out.GetMetadata().GetCreatedAt().AsTime().Equal(w.createdAt) ||
		!out.GetMetadata().GetLastUpdatedAt().AsTime().Equal(w.lastUpdatedAt) {
		t.Errorf("%s: Flyte's Get = %v, want uri %q, source %v, key map %v, times %v %v",
			w.source, out, w.uri, w.flyteSource, w.labels, w.createdAt, w.lastUpdatedAt)
	}
}

func (b *testBundle) countOurs(t *testing.T) int {
	t.Helper()
	conn, err := pgx.Connect(b.ctx, b.dst)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(b.ctx, `SELECT count(*) FROM cache_entries`).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func TestImportPlacesEveryRowOrSaysWhyNot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	entries, skips := realisticRows(t, b)
	// Batches of 3 make the 14 rows span five of them.
	sum, skipped := b.run(t, flyteimport.Config{Org: "fallback", BatchSize: 3})

	b.assertEntries(t, entries)
	for key, reason := range skips {
		if s, ok := skipped[key]; !ok || s.Reason != reason || s.Detail == "" {
			t.Errorf("row %q: skipped as %+v, want reason %s with a detail", key, s, reason)
		}
	}
	if len(skipped) != len(skips) {
		t.Errorf("skipped %d rows, want %d: %v", len(skipped), len(skips), skipped)
	}
	// The detail names the field our limits refuse.
	for key, field := range map[string]string{"p-d-long-label": "labels", "m-n-o": "source_identifier.project", "p-d-bad\x01key": "key"} {
		if !strings.Contains(skipped[key].Detail, field) {
			t.Errorf("row %q: detail %q does not name %s", key, skipped[key].Detail, field)
		}
	}
	if got := b.countOurs(t); got != len(entries) {
		t.Errorf("our database holds %d entries, want %d", got, len(entries))
	}
	if sum.Read != 14 || sum.Imported != int64(len(entries)) || sum.Present != 0 || sum.SkippedTotal() != int64(len(skips)) {
		t.Errorf("summary = %+v", sum)
	}
	if sum.Skipped[flyteimport.ReasonAmbiguousKey] != 2 || sum.Skipped[flyteimport.ReasonOverLimit] != 4 {
		t.Errorf("skipped by reason = %v", sum.Skipped)
	}
	if sum.FromKeyOnly != 2 || sum.Reservations != 2 {
		t.Errorf("from key only = %d, reservations = %d; want 2 and 2", sum.FromKeyOnly, sum.Reservations)
	}
	// bare-staging-k1 has no metadata: a miss for Flyte's API that still
	// holds its key.
	if sum.NoSource != 1 {
		t.Errorf("no source = %d, want 1", sum.NoSource)
	}
	if want := "x-y-z"; sum.LastKey != want {
		t.Errorf("last key = %q, want %q", sum.LastKey, want)
	}

	// A second run adds nothing, changes nothing, and says so.
	again, skippedAgain := b.run(t, flyteimport.Config{Org: "fallback", BatchSize: 3})
	if again.Read != 14 || again.Imported != 0 || again.Present != int64(len(entries)) || len(skippedAgain) != len(skips) {
		t.Errorf("second run: summary = %+v, %d skipped", again, len(skippedAgain))
	}
	b.assertEntries(t, entries)
}

func TestImportWithoutOrgSkipsRowsThatNeedIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, _ = realisticRows(t, b)
	sum, skipped := b.run(t, flyteimport.Config{})
	for _, key := range []string{"solo-production-k-1", "bare-staging-k1"} {
		if skipped[key].Reason != flyteimport.ReasonNoOrg {
			t.Errorf("row %q: skipped as %+v, want no_org", key, skipped[key])
		}
	}
	if sum.Imported != 3 {
		t.Errorf("imported %d, want the 3 rows whose metadata names their org", sum.Imported)
	}
}

func TestImportNeverReplacesAnExistingEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, flyteRow{key: "p-d-k", uri: "s3://flyte/old", md: executorMetadata("acme", "p", "d", "t", "1", t0), lastUpdated: t1, createdAt: t1})
	scope := &cachev1.Scope{Org: "acme", Project: "p", Domain: "d"}
	if _, err := b.manager.Put(b.ctx, &cachev1.PutRequest{Scope: scope, Key: "k",
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://ours/new"}}}); err != nil {
		t.Fatalf("put: %v", err)
	}
	sum, _ := b.run(t, flyteimport.Config{})
	if sum.Imported != 0 || sum.Present != 1 {
		t.Errorf("summary = %+v, want 1 already present", sum)
	}
	res, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: scope, Key: "k"})
	if err != nil || res.GetOutput().GetUri() != "s3://ours/new" {
		t.Fatalf("get = %v, %v; want our own entry untouched", res, err)
	}
}

func TestImportDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	entries, skips := realisticRows(t, b)
	// One entry is ours already: the dry run must count it as present.
	first := entries[0]
	if _, err := b.manager.Put(b.ctx, &cachev1.PutRequest{
		Scope: &cachev1.Scope{Org: first.org, Project: first.project, Domain: first.domain}, Key: first.key,
		Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://ours"}}}); err != nil {
		t.Fatalf("put: %v", err)
	}
	sum, skipped := b.run(t, flyteimport.Config{Org: "fallback", DryRun: true, BatchSize: 4})
	if !sum.DryRun || sum.Read != 14 || sum.Imported != int64(len(entries)-1) || sum.Present != 1 || len(skipped) != len(skips) {
		t.Errorf("dry run: summary = %+v, %d skipped", sum, len(skipped))
	}
	if got := b.countOurs(t); got != 1 {
		t.Errorf("after a dry run our database holds %d entries, want the 1 it had", got)
	}
	// The real run then does what the dry run said.
	actual, _ := b.run(t, flyteimport.Config{Org: "fallback", BatchSize: 4})
	if actual.Imported != sum.Imported || actual.Present != sum.Present {
		t.Errorf("real run = %+v, dry run said %+v", actual, sum)
	}
}

func TestImportResumesAfterAKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	entries, _ := realisticRows(t, b)
	// Keys sort in the source's collation; resume after the third one.
	rows, err := b.srcConn.Query(b.ctx, `SELECT key FROM cache_service_outputs ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	sum, skipped := b.run(t, flyteimport.Config{Org: "fallback", BatchSize: 2, StartAfter: keys[2]})
	if sum.Read != int64(len(keys)-3) {
		t.Errorf("read %d rows, want the %d after %q", sum.Read, len(keys)-3, keys[2])
	}
	for _, k := range keys[:3] {
		if _, ok := skipped[k]; ok {
			t.Errorf("row %q, before the resume point, was read", k)
		}
	}
	// The rest, then everything: each entry is imported once overall.
	rest, _ := b.run(t, flyteimport.Config{Org: "fallback"})
	if sum.Imported+rest.Imported != int64(len(entries)) || rest.Present != sum.Imported {
		t.Errorf("resumed %+v then full %+v: want %d entries imported once", sum, rest, len(entries))
	}
}

func TestImportSkipsAnIdentityTooLargeToIndex(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Each part is within its character limit, but in four-byte characters
	// that do not compress the identity is over PostgreSQL's btree limit.
	var org, key strings.Builder
	for i := range 255 {
		org.WriteRune(rune(0x1F300 + i))
	}
	for i := range 508 {
		key.WriteRune(rune(0x20000 + i*7))
	}
	big := "p-d-" + key.String()
	b.insert(t,
		flyteRow{key: big, uri: "s3://x", md: executorMetadata(org.String(), "p", "d", "t", "1", t0), lastUpdated: t1, createdAt: t1},
		flyteRow{key: "p-d-small", uri: "s3://y", md: executorMetadata("acme", "p", "d", "t", "1", t0), lastUpdated: t1, createdAt: t1},
	)
	sum, skipped := b.run(t, flyteimport.Config{})
	if skipped[big].Reason != flyteimport.ReasonTooLarge || sum.Imported != 1 {
		t.Fatalf("summary = %+v, skipped = %v; want the big row too_large and the small one imported", sum, skipped)
	}
	_, err := b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: &cachev1.Scope{Org: "acme", Project: "p", Domain: "d"}, Key: "small"})
	if err != nil {
		t.Fatalf("the small row's entry: %v", err)
	}
	_, err = b.manager.Get(b.ctx, &cachev1.GetRequest{Scope: &cachev1.Scope{Org: org.String(), Project: "p", Domain: "d"}, Key: key.String()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("the big row's entry: %v, want not_found", err)
	}
}

func TestImportRefusesADatabaseThatIsNotFlytes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := flyteimport.Run(b.ctx, b.store, flyteimport.Config{From: b.dst}, flyteimport.Hooks{})
	if err == nil || !strings.Contains(err.Error(), "cache_service_outputs") {
		t.Fatalf("err = %v, want one naming Flyte's table", err)
	}
}

// millionEnv turns on the import of a million generated rows, which measures
// the import's rate; it takes about a minute, so it never runs by default.
const millionEnv = "CACHESERVICE_IMPORT_MILLION"

// TestImportMillionRows generates a million rows as Flyte's executor writes
// them (ten projects, metadata on every row) and imports them, logging the
// rate; a re-run must then find every entry present.
func TestImportMillionRows(t *testing.T) {
	if os.Getenv(millionEnv) == "" {
		t.Skipf("set %s=1 to import a million rows and measure the rate", millionEnv)
	}
	b := setup(t)
	const projects = 10
	total := 1_000_000
	if v := os.Getenv("CACHESERVICE_IMPORT_ROWS"); v != "" { // smaller runs, for profiling
		if _, err := fmt.Sscan(v, &total); err != nil {
			t.Fatalf("CACHESERVICE_IMPORT_ROWS=%q: want a number", v)
		}
	}
	var mds [][]byte
	for p := range projects {
		md, err := proto.Marshal(executorMetadata("acme", fmt.Sprintf("proj-%d", p), "development", "wf.task", "v1", t0))
		if err != nil {
			t.Fatal(err)
		}
		mds = append(mds, md)
	}
	start := time.Now()
	if _, err := b.srcConn.Exec(b.ctx, `
		INSERT INTO cache_service_outputs (key, output_uri, metadata, last_updated, created_at)
		SELECT 'proj-' || (i % 10) || '-development-' || md5(i::text) || '-' || left(md5((-i)::text), 8) || '-v1',
		       's3://flyte-bucket/metadata/outputs/' || md5(i::text) || '/outputs.pb',
		       ($1::bytea[])[i % 10 + 1], now(), now()
		FROM generate_series(1, $2::int) AS i`, mds, total); err != nil {
		t.Fatalf("generate rows: %v", err)
	}
	if _, err := b.srcConn.Exec(b.ctx, `ANALYZE cache_service_outputs`); err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %d rows in %v", total, time.Since(start).Round(time.Millisecond))
	batch := 1000
	if v := os.Getenv("CACHESERVICE_IMPORT_BATCH"); v != "" {
		if _, err := fmt.Sscan(v, &batch); err != nil {
			t.Fatalf("CACHESERVICE_IMPORT_BATCH=%q: want a number", v)
		}
	}
	sum, _ := b.run(t, flyteimport.Config{BatchSize: batch})
	if sum.Imported != int64(total) {
		t.Fatalf("imported %d, want %d: %+v", sum.Imported, total, sum)
	}
	t.Logf("batch %d: imported %d rows in %v: %.0f rows/s", batch, sum.Imported, sum.Elapsed.Round(time.Millisecond),
		float64(sum.Read)/sum.Elapsed.Seconds())
	again, _ := b.run(t, flyteimport.Config{BatchSize: batch})
	if again.Imported != 0 || again.Present != int64(total) {
		t.Fatalf("re-run: %+v", again)
	}
	t.Logf("re-run: %d rows found present in %v: %.0f rows/s", again.Present, again.Elapsed.Round(time.Millisecond),
		float64(again.Read)/again.Elapsed.Seconds())
}
