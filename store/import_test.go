package store_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

// importT0 is a time long past: imported entries keep Flyte's timestamps,
// where a Put takes the database's clock.
var importT0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func TestImportEntriesInsertsOnlyWhatIsMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0, later := importT0, importT0.Add(time.Hour)
	existing := store.Entry{ID: store.ID{"o", "p", "d", "mine"}, URI: "s3://mine"}
	if err := b.store.PutEntry(b.ctx, existing, store.Replace{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	before, err := b.store.GetEntry(b.ctx, existing.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	batch := []store.Entry{
		{ID: existing.ID, URI: "s3://imported", CreatedAt: t0, LastUpdatedAt: t0},
		{ID: store.ID{"o", "p", "d", "new"}, URI: "s3://new", SourceName: "t", SourceVersion: "v",
			Labels: map[string]string{"team": "ml"}, CreatedAt: t0, LastUpdatedAt: later, FlyteSource: []byte{0x22, 0x01, 0x74}},
		{ID: store.ID{"o", "p", "d", "inline"}, Inline: []byte{}, CreatedAt: t0, LastUpdatedAt: t0},
	}
	ids := []store.ID{batch[0].ID, batch[1].ID, batch[2].ID}
	if n, err := b.store.CountEntries(b.ctx, ids); err != nil || n != 1 {
		t.Fatalf("CountEntries before = %d, %v; want 1", n, err)
	}
	n, err := b.store.ImportEntries(b.ctx, batch)
	if err != nil || n != 2 {
		t.Fatalf("ImportEntries = %d, %v; want 2 inserted", n, err)
	}
	if got, _ := b.store.GetEntry(b.ctx, existing.ID); got.URI != "s3://mine" || !got.CreatedAt.Equal(before.CreatedAt) {
		t.Errorf("existing entry = %+v, want it untouched", got)
	}
	got, err := b.store.GetEntry(b.ctx, batch[1].ID)
	if err != nil || got.URI != "s3://new" || got.SourceName != "t" || got.Labels["team"] != "ml" ||
		!got.CreatedAt.Equal(t0) || !got.LastUpdatedAt.Equal(later) || !bytes.Equal(got.FlyteSource, batch[1].FlyteSource) {
		t.Errorf("imported entry = %+v, %v", got, err)
	}
	if got, err := b.store.GetEntry(b.ctx, batch[2].ID); err != nil || got.Inline == nil || got.URI != "" {
		t.Errorf("imported empty inline entry = %+v, %v", got, err)
	}
	// Again: nothing is new.
	if n, err := b.store.ImportEntries(b.ctx, batch); err != nil || n != 0 {
		t.Fatalf("ImportEntries again = %d, %v; want 0", n, err)
	}
	if n, err := b.store.CountEntries(b.ctx, ids); err != nil || n != 3 {
		t.Fatalf("CountEntries after = %d, %v; want 3", n, err)
	}
}
