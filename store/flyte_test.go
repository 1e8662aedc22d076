package store_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cacheservice/cacheservice/store"
)

// previousGetEntry is GetEntry's query and scan as the version before
// migration 004 ran them, word for word: a replica of that version keeps
// running it during a rolling upgrade.
func previousGetEntry(ctx context.Context, conn *pgx.Conn, id store.ID) (store.Entry, error) {
	e := store.Entry{ID: id}
	var uri *string
	err := conn.QueryRow(ctx, `
		SELECT output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at
		FROM cache_entries
		WHERE org = $1 AND project = $2 AND domain = $3 AND key = $4`,
		id.Org, id.Project, id.Domain, id.Key,
	).Scan(&uri, &e.Inline, &e.SourceName, &e.SourceVersion, &e.Labels, &e.CreatedAt, &e.LastUpdatedAt)
	if err != nil {
		return store.Entry{}, err
	}
	if uri != nil {
		e.URI = *uri
	} else if e.Inline == nil {
		e.Inline = []byte{}
	}
	return e, nil
}

// previousPutEntry is the previous version's PutEntry statement, which knows
// nothing of flyte_written_at, literals and flyte_source.
func previousPutEntry(ctx context.Context, conn *pgx.Conn, e store.Entry) error {
	var uri *string
	var inline []byte
	if e.URI != "" {
		uri = &e.URI
	} else {
		inline = e.Inline
	}
	_, err := conn.Exec(ctx, `
		INSERT INTO cache_entries AS e
			(org, project, domain, key, output_uri, output_inline, source_name, source_version, labels, created_at, last_updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', $9, $9)
		ON CONFLICT (org, project, domain, key) DO UPDATE SET
			output_uri      = EXCLUDED.output_uri,
			output_inline   = EXCLUDED.output_inline,
			source_name     = EXCLUDED.source_name,
			source_version  = EXCLUDED.source_version,
			labels          = EXCLUDED.labels,
			last_updated_at = EXCLUDED.last_updated_at`,
		e.ID.Org, e.ID.Project, e.ID.Domain, e.ID.Key, uri, inline, e.SourceName, e.SourceVersion, time.Now())
	return err
}

// previousVersionConn is a connection of its own, standing for a replica of
// the previous version.
func previousVersionConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// literalBytes stands for a serialized LiteralMap; the store never parses it.
var literalBytes = []byte{0x0a, 0x07, 0x0a, 0x01, 'o', 0x12, 0x02, 0x08, 0x01}

func TestLiteralEntryRoundTripsWithItsMarkerAndSource(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "lit"}
	src := []byte{0x08, 0x01, 0x12, 0x01, 'p'}
	in := store.Entry{ID: id, Inline: literalBytes, Literals: true, FlyteSource: src,
		SourceName: "n", SourceVersion: "v"}
	if err := b.store.PutEntry(b.ctx, in, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.store.GetEntry(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Literals || !bytes.Equal(got.Inline, literalBytes) || !bytes.Equal(got.FlyteSource, src) || got.URI != "" {
		t.Fatalf("got %+v", got)
	}

	// An ordinary inline entry is not a LiteralMap, and has no Flyte source.
	plain := store.ID{"o", "p", "d", "plain"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: plain, Inline: literalBytes}, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.store.GetEntry(b.ctx, plain); err != nil || got.Literals || got.FlyteSource != nil {
		t.Fatalf("plain inline entry: %+v, %v", got, err)
	}

	// Overwriting through cacheservice.v1 clears both.
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: literalBytes}, store.Replace{Always: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.store.GetEntry(b.ctx, id); err != nil || got.Literals || got.FlyteSource != nil {
		t.Fatalf("after a v1 overwrite: %+v, %v", got, err)
	}
}

func TestEmptyLiteralMapIsALiteralEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := store.ID{"o", "p", "d", "empty"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: []byte{}, Literals: true}, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.store.GetEntry(b.ctx, id)
	if err != nil || !got.Literals || got.Inline == nil || len(got.Inline) != 0 {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// TestPreviousVersionServesLiteralEntryByItsBytes runs the previous
// version's query against a literal row: it must see the LiteralMap's exact
// bytes as inline output, never an empty hit.
func TestPreviousVersionServesLiteralEntryByItsBytes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := previousVersionConn(t, b.url)
	id := store.ID{"o", "p", "d", "lit"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: literalBytes, Literals: true, FlyteSource: []byte{0x20, 0x01}}, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	old, err := previousGetEntry(b.ctx, conn, id)
	if err != nil {
		t.Fatal(err)
	}
	if old.URI != "" || !bytes.Equal(old.Inline, literalBytes) {
		t.Fatalf("previous version sees uri %q inline %x; want the literal bytes %x", old.URI, old.Inline, literalBytes)
	}
}

// TestPreviousVersionOverwriteUnmarksLiterals: the previous version's Put
// replaces the output without touching the new columns; the entry must then
// read as what that Put wrote, not as a LiteralMap.
func TestPreviousVersionOverwriteUnmarksLiterals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := previousVersionConn(t, b.url)
	for _, tc := range []struct {
		name string
		over store.Entry
	}{
		{"uri", store.Entry{URI: "s3://b/o"}},
		{"other bytes", store.Entry{Inline: []byte("not a literal map")}},
		{"empty bytes", store.Entry{Inline: []byte{}}},
	} {
		id := store.ID{"o", "p", "d", tc.name}
		if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: literalBytes, Literals: true, FlyteSource: []byte{0x20, 0x01},
			SourceName: "n"}, store.Replace{}); err != nil {
			t.Fatal(err)
		}
		tc.over.ID = id
		if err := previousPutEntry(b.ctx, conn, tc.over); err != nil {
			t.Fatalf("%s: previous put: %v", tc.name, err)
		}
		got, err := b.store.GetEntry(b.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Literals {
			t.Errorf("%s: still marked as a LiteralMap after the previous version overwrote it: %+v", tc.name, got)
		}
		if got.FlyteSource != nil {
			t.Errorf("%s: still carries the Flyte source of the write the previous version replaced", tc.name)
		}
		if got.URI != tc.over.URI || !bytes.Equal(got.Inline, tc.over.Inline) && tc.over.URI == "" {
			t.Errorf("%s: got uri %q inline %x", tc.name, got.URI, got.Inline)
		}
	}
}

// TestPreviousVersionOverwriteOfSameTaskUnbindsFlyteSource: the previous
// version's Put of the same task (same source name and version, same bytes)
// must still unbind the stored Flyte source identifier and the LiteralMap
// mark, since they describe a write that is gone.
func TestPreviousVersionOverwriteOfSameTaskUnbindsFlyteSource(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := previousVersionConn(t, b.url)
	id := store.ID{"o", "p", "d", "same"}
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: literalBytes, Literals: true, FlyteSource: []byte{0x20, 0x01},
		SourceName: "n", SourceVersion: "v"}, store.Replace{}); err != nil {
		t.Fatal(err)
	}
	if err := previousPutEntry(b.ctx, conn, store.Entry{ID: id, Inline: literalBytes, SourceName: "n", SourceVersion: "v"}); err != nil {
		t.Fatal(err)
	}
	got, err := b.store.GetEntry(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Literals || got.FlyteSource != nil {
		t.Fatalf("after the previous version's overwrite of the same task: literals %v, flyte source %x", got.Literals, got.FlyteSource)
	}
	// This version's own overwrite binds them again.
	if err := b.store.PutEntry(b.ctx, store.Entry{ID: id, Inline: literalBytes, Literals: true, FlyteSource: []byte{0x20, 0x01},
		SourceName: "n", SourceVersion: "v"}, store.Replace{Always: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.store.GetEntry(b.ctx, id); err != nil || !got.Literals || got.FlyteSource == nil {
		t.Fatalf("after this version's overwrite: %+v, %v", got, err)
	}
}
