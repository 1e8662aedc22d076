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

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func TestPutEntryThenGetEntryRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []store.Entry{
		{ID: store.ID{"o", "p", "d", "uri"}, URI: "s3://bucket/out", SourceName: "task", SourceVersion: "v1",
			Labels: map[string]string{"team": "ml", "empty": ""}, CreatedAt: t0, LastUpdatedAt: t0},
		{ID: store.ID{"o", "p", "d", "inline"}, Inline: []byte{0, 1, 2, 255}, CreatedAt: t0, LastUpdatedAt: t0},
		{ID: store.ID{"o", "p", "d", "empty-inline"}, Inline: []byte{}, CreatedAt: t0, LastUpdatedAt: t0},
	}
	for _, want := range cases {
		if err := b.store.PutEntry(b.ctx, want, store.Replace{}); err != nil {
			t.Fatalf("put %s: %v", want.ID.Key, err)
		}
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
		if !got.CreatedAt.Equal(t0) || !got.LastUpdatedAt.Equal(t0) {
			t.Errorf("%s: times = %v %v", want.ID.Key, got.CreatedAt, got.LastUpdatedAt)
		}
	}
}

func TestGetEntryMissingIsErrNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.store.GetEntry(b.ctx, store.ID{"o", "p", "d", "nothing"})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestPutEntryReplaceRules(t *testing.T) {
	t.Parallel()
	later := t0.Add(time.Hour)
	cases := []struct {
		name     string
		replace  store.Replace
		replaced bool
	}{
		{"no replace", store.Replace{}, false},
		{"always", store.Replace{Always: true}, true},
		{"updated before a time after the entry", store.Replace{UpdatedBefore: t0.Add(time.Microsecond)}, true},
		{"updated before the entry's own time", store.Replace{UpdatedBefore: t0}, false},
		{"updated before a time before the entry", store.Replace{UpdatedBefore: t0.Add(-time.Minute)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id := store.ID{"o", "p", "d", "k"}
			first := store.Entry{ID: id, URI: "first", CreatedAt: t0, LastUpdatedAt: t0}
			if err := b.store.PutEntry(b.ctx, first, store.Replace{}); err != nil {
				t.Fatalf("first put: %v", err)
			}
			second := store.Entry{ID: id, Inline: []byte("second"), CreatedAt: later, LastUpdatedAt: later}
			err := b.store.PutEntry(b.ctx, second, tc.replace)
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
			if !got.LastUpdatedAt.Equal(later) {
				t.Errorf("last_updated_at = %v, want %v", got.LastUpdatedAt, later)
			}
		})
	}
}

func TestDeleteEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "k"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "u", CreatedAt: t0, LastUpdatedAt: t0}, store.Replace{}); err != nil {
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
		e.CreatedAt, e.LastUpdatedAt = t0, t0
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
	err := b.store.PutEntry(b.ctx, store.Entry{ID: id, URI: "u", CreatedAt: t0, LastUpdatedAt: t0}, store.Replace{})
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("PutEntry: err = %v, want ErrTooLarge", err)
	}
	err = b.store.InTx(b.ctx, func(ctx context.Context, tx *store.Tx) error {
		_, _, err := tx.LockReservation(ctx, store.Reservation{ID: id, OwnerID: "w", HeartbeatInterval: time.Second, ExpiresAt: t0})
		return err
	})
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("LockReservation: err = %v, want ErrTooLarge", err)
	}
}
