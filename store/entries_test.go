package store_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

func TestPutEntryThenGetEntryRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []store.Entry{
		{ID: store.ID{"o", "p", "d", "uri"}, URI: "s3://bucket/out", SourceName: "task", SourceVersion: "v1",
			Labels: map[string]string{"team": "ml", "empty": ""}},
		{ID: store.ID{"o", "p", "d", "inline"}, Inline: []byte{0, 1, 2, 255}},
		{ID: store.ID{"o", "p", "d", "empty-inline"}, Inline: []byte{}},
	}
	// The database's clock stamps the entry, however far it is from ours.
	b.clock.Shift(t, 1000*time.Hour)
	for _, want := range cases {
		before := b.clock.Now(t)
		if err := b.store.PutEntry(b.ctx, want, store.Replace{}); err != nil {
			t.Fatalf("put %s: %v", want.ID.Key, err)
		}
		after := b.clock.Now(t)
		got, err := b.store.GetEntry(b.ctx, want.ID)
		if err != nil {
			t.Fatalf("get %s: %v", want.ID.Key, err)
		}
		if got.URI != want.URI || !bytes.Equal(got.Inline, want.Inline) || (want.URI == "" && got.Inline == nil) {
			t.Errorf("%s: output = (%q, %v), want (%q, %v)", want.ID.Key, got.URI, got.Inline, want.URI, want.Inline)
		}
		if got.SourceName != want.SourceName || got.SourceVersion != want.SourceVersion {
			t.Errorf("%s: source = %q %q", want.ID.Key, got.SourceName, got.SourceVersion)
		}
		if len(want.Labels) > 0 && !maps.Equal(got.Labels, want.Labels) {
			t.Errorf("%s: labels = %v, want %v", want.ID.Key, got.Labels, want.Labels)
		}
		if !got.CreatedAt.Equal(got.LastUpdatedAt) || got.CreatedAt.Before(before.Truncate(time.Microsecond)) || got.CreatedAt.After(after) {
			t.Errorf("%s: times = %v %v, want both equal, between %v and %v", want.ID.Key, got.CreatedAt, got.LastUpdatedAt, before, after)
		}
	}
}

func (b *testBundle) mustGet(t *testing.T, id store.ID) store.Entry {
	t.Helper()
	e, err := b.store.GetEntry(b.ctx, id)
	if err != nil {
		t.Fatalf("get %s: %v", id.Key, err)
	}
	return e
}

func TestGetEntryMissingIsErrNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.store.GetEntry(b.ctx, store.ID{"o", "p", "d", "nothing"})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// TestPutEntryReplaceRules writes an entry, moves the database's clock an
// hour on and writes again under each rule.
func TestPutEntryReplaceRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		replace  store.Replace
		replaced bool
	}{
		{"no replace", store.Replace{}, false},
		{"always", store.Replace{Always: true}, true},
		{"older than less than its age", store.Replace{OlderThan: 59 * time.Minute}, true},
		{"older than just over its age", store.Replace{OlderThan: time.Hour + time.Minute}, false},
		{"older than far more than its age", store.Replace{OlderThan: 24 * time.Hour}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id := store.ID{"o", "p", "d", "k"}
			if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "first"}, store.Replace{}); err != nil {
				t.Fatalf("first put: %v", err)
			}
			t0 := b.mustGet(t, id).LastUpdatedAt
			b.clock.Shift(t, time.Hour)
			before := b.clock.Now(t)
			err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: []byte("second")}, tc.replace)
			got, getErr := b.store.GetEntry(b.ctx, id)
			if getErr != nil {
				t.Fatalf("get: %v", getErr)
			}
			if !tc.replaced {
				if !errors.Is(err, store.ErrConflict) {
					t.Fatalf("put err = %v, want ErrConflict", err)
				}
				if got.URI != "first" || !got.LastUpdatedAt.Equal(t0) {
					t.Fatalf("entry changed by a refused put: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if got.URI != "" || string(got.Inline) != "second" {
				t.Errorf("output = %q %q, want inline second", got.URI, got.Inline)
			}
			if !got.CreatedAt.Equal(t0) {
				t.Errorf("created_at = %v, want the first put's %v", got.CreatedAt, t0)
			}
			if got.LastUpdatedAt.Before(before.Truncate(time.Microsecond)) || got.LastUpdatedAt.After(b.clock.Now(t)) {
				t.Errorf("last_updated_at = %v, want the moved clock's time of the second put (from %v)", got.LastUpdatedAt, before)
			}
		})
	}
}

func TestDeleteEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "u"}, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.DeleteEntry(b.ctx, id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := b.store.GetEntry(b.ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if err := b.store.DeleteEntry(b.ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestIDPartsNeverCollide(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := store.ID{Org: "a-b", Project: "c", Domain: "d", Key: "k"}
	c := store.ID{Org: "a", Project: "b-c", Domain: "d", Key: "k"}
	for _, e := range []store.Entry{{ID: a, URI: "first"}, {ID: c, URI: "second"}} {
		if err := b.store.PutEntry(b.ctx, e, store.Replace{}); err != nil {
			t.Fatalf("put %+v: %v", e.ID, err)
		}
	}
	for id, want := range map[store.ID]string{a: "first", c: "second"} {
		got, err := b.store.GetEntry(b.ctx, id)
		if err != nil || got.URI != want {
			t.Errorf("get %+v = %q, %v; want %q", id, got.URI, err, want)
		}
	}
}

// TestIdentityOverIndexLimitIsErrTooLarge writes an identity of 4-byte
// characters that compress badly: within the API's character limits, over
// the btree's byte limit. Both tables refuse it with ErrTooLarge.
func TestIdentityOverIndexLimitIsErrTooLarge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var key []rune
	for i := range 1024 {
		key = append(key, rune(0x1F300+i%0x2FF), rune(0x20000+i))
	}
	id := store.ID{"o", "p", "d", string(key[:1024])}
	err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "u"}, store.Replace{})
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("PutEntry: err = %v, want ErrTooLarge", err)
	}
	err = b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		_, err := tx.ClaimReservation(ctx, store.Claim{ID: id, OwnerID: "w", HeartbeatInterval: time.Second, Lease: 3 * time.Second})
		return err
	})
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("ClaimReservation: err = %v, want ErrTooLarge", err)
	}
}
