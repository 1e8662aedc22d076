// Package flyteimport copies the cache of Flyte's own cache service (its
// PostgreSQL table cache_service_outputs) into ours. Flyte stored each entry
// under one string, project-domain-key, and dropped the org; the importer
// recovers the scope from each row's stored metadata, or from the key alone
// when that reading is unambiguous, and reports and skips every row it cannot
// place or that our limits refuse: it never guesses and never truncates. It
// only reads the source, and writes through the store with the same limits
// as the API, never replacing an entry that is there already, so it can run
// again or resume. Reservations are not imported: they expire in seconds.
package flyteimport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cacheservice/cacheservice/store"
)

// Reason says why a row was skipped; it is stable, for scripts.
type Reason string

// The reasons a row is skipped.
const (
	// ReasonBadMetadata: the stored metadata is not a Metadata message.
	ReasonBadMetadata Reason = "bad_metadata"
	// ReasonAmbiguousKey: no metadata decides the scope, and the key reads
	// as project-domain-key in more than one way.
	ReasonAmbiguousKey Reason = "ambiguous_key"
	// ReasonUnsplittableKey: no metadata decides the scope, and no reading
	// of the key as project-domain-key is possible (or allowed by the rules).
	ReasonUnsplittableKey Reason = "unsplittable_key"
	// ReasonNoOrg: neither the metadata nor --org names the org.
	ReasonNoOrg Reason = "no_org"
	// ReasonNoOutput: the row has no output URI.
	ReasonNoOutput Reason = "no_output"
	// ReasonOverLimit: our limits refuse a field (a label key over 63
	// characters, a key over 1024, a control character, ...).
	ReasonOverLimit Reason = "over_limit"
	// ReasonTooLarge: the scope and key together are too large for the
	// database's index, though each is within its limit.
	ReasonTooLarge Reason = "too_large"
)

// Config says what to import and how.
type Config struct {
	// From is the Flyte cache service database's connection string.
	From string
	// Org is the org of rows whose metadata names none (Flyte dropped it
	// from the key). Empty skips such rows with ReasonNoOrg.
	Org string
	// Projects and Domains, when not empty, are the only projects and
	// domains a key without metadata may be read as naming; they can make
	// an ambiguous key unambiguous. They do not affect rows whose metadata
	// places them.
	Projects, Domains []string
	// BatchSize is how many rows are read and written at a time; zero
	// means 1000.
	BatchSize int
	// DryRun reads and checks everything and writes nothing.
	DryRun bool
	// StartAfter resumes after this source key (the last key a progress
	// line reported); empty starts at the beginning.
	StartAfter string
}

// Skipped is one row the import did not copy, and why.
type Skipped struct {
	Key    string
	Reason Reason
	Detail string
}

// Summary counts what an import did (or, in a dry run, would do).
type Summary struct {
	DryRun bool
	// Read is the number of source rows read.
	Read int64
	// Imported is the number of entries written (in a dry run: that would be).
	Imported int64
	// Present is the number of rows whose entry was in our store already,
	// left as it was.
	Present int64
	// Skipped counts the rows not copied, by reason.
	Skipped map[Reason]int64
	// FromKeyOnly counts the imported rows placed by their key alone, for
	// want of metadata that places them.
	FromKeyOnly int64
	// NoSource counts the imported rows without a source identifier (no
	// stored metadata names one). Flyte's API as we serve it answers them
	// not_found, since Flyte's client refuses a hit without a source, yet
	// they exist, so Flyte's non-overwriting Put of the same key gets
	// already_exists until an overwrite (or a Delete) replaces them.
	NoSource int64
	// LastKey is the last source key whose batch is done: a resumed import
	// starts after it.
	LastKey string
	// Reservations is the number of rows of cache_service_reservations,
	// which are not imported; -1 when the table does not exist.
	Reservations int64
	// Elapsed is the time the import took.
	Elapsed time.Duration
}

// SkippedTotal is the number of rows skipped for any reason.
func (s Summary) SkippedTotal() int64 {
	var n int64
	for _, c := range s.Skipped {
		n += c
	}
	return n
}

// Hooks let the caller watch an import. Either may be nil.
type Hooks struct {
	// Skip is called for each skipped row: a batch's rows in key order,
	// then any the database refused as too large.
	Skip func(Skipped)
	// Progress is called after each batch.
	Progress func(Summary)
}

// Run copies every row of the Flyte database at cfg.From into dst, batch by
// batch, each batch in one statement of its own. It returns the summary so
// far even when it fails, so that the caller can say where to resume.
//
// Reading and checking the next batch overlaps writing the current one; the
// checks (the validation rules) are most of the import's own work, so they
// run on every core.
func Run(ctx context.Context, dst *store.Store, cfg Config, hooks Hooks) (sum Summary, err error) {
	start := time.Now()
	sum = Summary{DryRun: cfg.DryRun, Skipped: map[Reason]int64{}, LastKey: cfg.StartAfter}
	defer func() { sum.Elapsed = time.Since(start) }()
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	conv, err := newConverter(cfg)
	if err != nil {
		return sum, err
	}
	src, err := openSource(ctx, cfg.From)
	if err != nil {
		return sum, err
	}
	defer src.close(context.WithoutCancel(ctx))
	if sum.Reservations, err = src.reservations(ctx); err != nil {
		return sum, err
	}

	readCtx, stopReading := context.WithCancel(ctx)
	batches := make(chan prepared, 1) // one batch ready while another is written
	var readErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(batches)
		readErr = readBatches(readCtx, src, conv, cfg, batches)
	}()
	defer func() {
		stopReading()
		<-done // the reader owns the source connection until it returns
		if err == nil {
			err = readErr
		}
	}()

	skip := func(s Skipped) {
		sum.Skipped[s.Reason]++
		if hooks.Skip != nil {
			hooks.Skip(s)
		}
	}
	for b := range batches {
		for _, s := range b.skips {
			skip(s)
		}
		imported, err := write(ctx, dst, b, cfg.DryRun, skip)
		if err != nil {
			return sum, err
		}
		sum.Read += int64(b.rows)
		sum.Imported += imported.inserted
		sum.Present += imported.present
		sum.FromKeyOnly += b.fromKeyOnly
		sum.NoSource += b.noSource
		sum.LastKey = b.lastKey
		if hooks.Progress != nil {
			hooks.Progress(sum)
		}
	}
	return sum, nil
}

// prepared is one batch, read and checked, ready to write.
type prepared struct {
	rows        int
	lastKey     string
	entries     []store.Entry
	sourceKeys  []string // the Flyte key of each entry
	skips       []Skipped
	fromKeyOnly int64
	noSource    int64
}

// readBatches reads the source in key order and sends each batch, converted,
// until the source is exhausted (nil) or a read fails.
func readBatches(ctx context.Context, src *source, conv *converter, cfg Config, out chan<- prepared) error {
	after, first := cfg.StartAfter, cfg.StartAfter == ""
	for {
		rows, err := src.batch(ctx, after, first, cfg.BatchSize)
		if err != nil || len(rows) == 0 {
			return err
		}
		first, after = false, rows[len(rows)-1].Key
		select {
		case out <- conv.convertAll(rows):
		case <-ctx.Done():
			return ctx.Err()
		}
		if len(rows) < cfg.BatchSize {
			return nil
		}
	}
}

// written counts one batch's outcome.
type written struct{ inserted, present int64 }

// write stores a batch, or in a dry run counts what storing it would do.
// When one entry of the batch is too large to index, the batch statement
// fails whole, so its entries are written one by one to skip just that one.
func write(ctx context.Context, dst *store.Store, b prepared, dryRun bool, skip func(Skipped)) (written, error) {
	var w written
	if dryRun {
		ids := make([]store.ID, len(b.entries))
		for i, e := range b.entries {
			ids[i] = e.ID
		}
		present, err := dst.CountEntries(ctx, ids)
		if err != nil {
			return w, fmt.Errorf("look up entries in our database: %w", err)
		}
		// A dry run cannot ask the index whether an identity fits; the
		// real run may still skip some as too_large.
		return written{inserted: int64(len(b.entries)) - present, present: present}, nil
	}
	n, err := dst.ImportEntries(ctx, b.entries)
	if err == nil {
		return written{inserted: n, present: int64(len(b.entries)) - n}, nil
	}
	if !errors.Is(err, store.ErrTooLarge) {
		return w, fmt.Errorf("write entries to our database: %w", err)
	}
	for i, e := range b.entries {
		n, err := dst.ImportEntries(ctx, []store.Entry{e})
		switch {
		case errors.Is(err, store.ErrTooLarge):
			skip(Skipped{Key: b.sourceKeys[i], Reason: ReasonTooLarge,
				Detail: "scope and key together are too large for the database's index"})
		case err != nil:
			return w, fmt.Errorf("write entries to our database: %w", err)
		default:
			w.inserted += n
			w.present += 1 - n
		}
	}
	return w, nil
}
