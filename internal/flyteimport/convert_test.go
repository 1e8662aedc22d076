package flyteimport

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
)

// BenchmarkConvert measures the importer's own work per row (decoding the
// metadata, placing the row, checking our limits) on rows as Flyte's
// executor writes them, without a database.
func BenchmarkConvert(b *testing.B) {
	conv, err := newConverter(Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	rows := make([]flyteRow, 1000)
	for i := range rows {
		md, err := proto.Marshal(&flytecache.Metadata{
			SourceIdentifier: &flytecore.Identifier{ResourceType: flytecore.ResourceType_TASK,
				Org: "acme", Project: "flytesnacks", Domain: "development", Name: "wf.train", Version: "v7"},
			KeyMap: &flytecache.KeyMapMetadata{Values: map[string]string{
				"task-version": "v7", "exec-project": "flytesnacks", "exec-domain": "development",
				"execution-name": fmt.Sprintf("a%d", i), "exec-node": "n0", "exec-attempt": "0", "exec-org": "acme"}},
			CreatedAt: timestamppb.New(now),
		})
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = flyteRow{Key: fmt.Sprintf("flytesnacks-development-Zm9v%06d-abcd1234-efgh5678-HaSh-v1", i),
			OutputURI: fmt.Sprintf("s3://flyte/outputs/%d/outputs.pb", i), Metadata: md, LastUpdated: now, CreatedAt: now}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, _, s := conv.convert(rows[i%len(rows)]); s != nil {
			b.Fatal(s)
		}
	}
}

// TestConvertChecksTheMetadataReading: a task's identifier (the metadata's
// source) need not be the scope it ran in. Source ml/dev on stored key
// ml-dev-production-k reads as (ml, dev, production-k), but a task of
// ml/dev run in ml-dev/production stores the same key. The metadata's
// reading is taken only when it is the only one the lists (or, for a list
// not given, the metadata itself) allow; the metadata's org is kept
// whatever placed the row.
func TestConvertChecksTheMetadataReading(t *testing.T) {
	t.Parallel()
	md, err := proto.Marshal(&flytecache.Metadata{SourceIdentifier: &flytecore.Identifier{
		ResourceType: flytecore.ResourceType_TASK, Org: "acme", Project: "ml", Domain: "dev", Name: "t", Version: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	row := flyteRow{Key: "ml-dev-production-k", OutputURI: "s3://b/o", Metadata: md, LastUpdated: now, CreatedAt: now}
	cases := []struct {
		name               string
		projects, domains  []string
		org                string
		project, domain, k string
		reason             Reason // empty: imported as project, domain, k
	}{
		{"no lists: the metadata decides", nil, nil, "", "ml", "dev", "production-k", ""},
		{"lists agree with the metadata", []string{"ml"}, []string{"dev"}, "", "ml", "dev", "production-k", ""},
		{"domains alone: the project is the metadata's", nil, []string{"dev", "production"}, "", "ml", "dev", "production-k", ""},
		{"both lists allow another reading", []string{"ml", "ml-dev"}, []string{"dev", "production"}, "", "", "", "", ReasonAmbiguousKey},
		{"lists exclude the metadata's domain: the key decides, the metadata's org stays", nil, []string{"production"}, "other",
			"ml-dev", "production", "k", ""},
		{"lists exclude the metadata's project", []string{"ml-dev"}, nil, "other", "ml-dev", "production", "k", ""},
		{"lists exclude every reading", []string{"x"}, nil, "", "", "", "", ReasonUnsplittableKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conv, err := newConverter(Config{Org: c.org, Projects: c.projects, Domains: c.domains})
			if err != nil {
				t.Fatal(err)
			}
			e, _, skip := conv.convert(row)
			if c.reason != "" {
				if skip == nil || skip.Reason != c.reason {
					t.Fatalf("got %+v, skip %+v; want skipped as %s", e.ID, skip, c.reason)
				}
				return
			}
			if skip != nil {
				t.Fatalf("skipped: %+v", skip)
			}
			if e.ID.Org != "acme" || e.ID.Project != c.project || e.ID.Domain != c.domain || e.ID.Key != c.k {
				t.Fatalf("got %+v; want acme/%s/%s/%s", e.ID, c.project, c.domain, c.k)
			}
		})
	}
}
