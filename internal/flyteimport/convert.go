package flyteimport

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/store"
)

// converter turns Flyte's rows into our entries.
type converter struct {
	org       string
	rules     splitRules
	validator protovalidate.Validator
}

func newConverter(cfg Config) (*converter, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("load validation rules: %w", err)
	}
	set := func(list []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range list {
			m[s] = true
		}
		return m
	}
	return &converter{org: cfg.Org, rules: splitRules{Projects: set(cfg.Projects), Domains: set(cfg.Domains)}, validator: v}, nil
}

// convertAll converts a batch, spreading the rows over every core, and keeps
// the batch's order in what it returns.
func (c *converter) convertAll(rows []flyteRow) prepared {
	type result struct {
		entry   store.Entry
		fromKey bool
		skip    *Skipped
	}
	results := make([]result, len(rows))
	workers := min(runtime.GOMAXPROCS(0), len(rows))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(rows); i += workers {
				r := &results[i]
				r.entry, r.fromKey, r.skip = c.convert(rows[i])
			}
		})
	}
	wg.Wait()
	p := prepared{rows: len(rows), lastKey: rows[len(rows)-1].Key, entries: make([]store.Entry, 0, len(rows))}
	for i, r := range results {
		switch {
		case r.skip != nil:
			p.skips = append(p.skips, *r.skip)
		default:
			p.entries = append(p.entries, r.entry)
			p.sourceKeys = append(p.sourceKeys, rows[i].Key)
			if r.fromKey {
				p.fromKeyOnly++
			}
			if r.entry.FlyteSource == nil {
				p.noSource++
			}
		}
	}
	return p
}

// convert turns one row into the entry to store, or says why it is skipped.
// fromKey reports that the scope came from the key alone.
func (c *converter) convert(r flyteRow) (e store.Entry, fromKey bool, skip *Skipped) {
	skipped := func(reason Reason, format string, args ...any) (store.Entry, bool, *Skipped) {
		return store.Entry{}, false, &Skipped{Key: r.Key, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	md, err := decodeMetadata(r.Metadata)
	if err != nil {
		return skipped(ReasonBadMetadata, "%v", err)
	}
	// The metadata places the row when its source names the project and
	// domain the stored key starts with, the rules allow them, and no other
	// reading is as well supported (scopeFromSource); Flyte's executor sends
	// its task's identifier both as the request's scope and as the source.
	s, ok, err := scopeFromSource(r.Key, md.sourceProject(), md.sourceDomain(), c.rules)
	if err != nil {
		return skipped(ReasonAmbiguousKey, "%v", err)
	}
	if !ok {
		if s, err = scopeFromKey(r.Key, c.rules); err != nil {
			se := &splitError{}
			if errors.As(err, &se) {
				return skipped(se.reason, "%s", se.detail)
			}
			return skipped(ReasonUnsplittableKey, "%v", err)
		}
		fromKey = true
	}
	// The org Flyte dropped from the key is still in the metadata, whatever
	// decided the split; --org only fills in where the metadata names none.
	org := md.sourceOrg()
	if org == "" {
		org = c.org
	}
	if org == "" && md.sourceProject() == "" {
		return skipped(ReasonNoOrg, "no metadata names the row's org; pass --org to name the org Flyte dropped")
	}
	if org == "" {
		return skipped(ReasonNoOrg, "the metadata names no org; pass --org to name the org Flyte dropped")
	}
	if r.OutputURI == "" {
		return skipped(ReasonNoOutput, "output_uri is empty")
	}
	e = store.Entry{
		ID:            store.ID{Org: org, Project: s.Project, Domain: s.Domain, Key: s.Key},
		URI:           r.OutputURI,
		SourceName:    md.sourceName(),
		SourceVersion: md.sourceVersion(),
		Labels:        md.labels(),
		CreatedAt:     dbTime(r.CreatedAt),
		LastUpdatedAt: dbTime(r.LastUpdated),
	}
	if created := md.createdAt(); !created.IsZero() {
		e.CreatedAt = dbTime(created)
	}
	// Flyte's whole source identifier is kept as well, so that Flyte's API
	// as we serve it answers the imported entry as Flyte's service did.
	if e.FlyteSource, err = md.sourceBytes(); err != nil {
		return skipped(ReasonBadMetadata, "%v", err)
	}
	if err := c.check(e, md); err != nil {
		return skipped(ReasonOverLimit, "%s", err)
	}
	return e, fromKey, nil
}

// check applies the limits a Put of e would meet: the proto's validation
// rules, the ones the server's interceptor runs, both those of our API (scope,
// key, URI, source, labels) and those Flyte's API as we serve it adds (the
// whole source identifier), so that the entry reads back through either.
func (c *converter) check(e store.Entry, md metadata) error {
	req := &cachev1.PutRequest{
		Scope: &cachev1.Scope{Org: e.ID.Org, Project: e.ID.Project, Domain: e.ID.Domain},
		Key:   e.ID.Key,
		Output: &cachev1.CachedOutput{
			Value:    &cachev1.CachedOutput_Uri{Uri: e.URI},
			Metadata: &cachev1.Metadata{Labels: e.Labels},
		},
	}
	if e.SourceName != "" || e.SourceVersion != "" {
		req.Output.Metadata.Source = &cachev1.Source{Name: e.SourceName, Version: e.SourceVersion}
	}
	if err := c.validator.Validate(req); err != nil {
		return describeViolations("", err)
	}
	// The rest of Flyte's request has the same rules as ours; only the
	// source identifier is Flyte's own.
	if src := md.source(); src != nil {
		if err := c.validator.Validate(src); err != nil {
			return describeViolations("output.metadata.source_identifier.", err)
		}
	}
	return nil
}

// describeViolations renders a validation error as one line naming each
// field (after prefix) and rule, without the field's value (which may be
// long, or private).
func describeViolations(prefix string, err error) error {
	if err == nil {
		return nil
	}
	verr := &protovalidate.ValidationError{}
	if !errors.As(err, &verr) {
		return err
	}
	var parts []string
	for _, v := range verr.Violations {
		field := prefix + protovalidate.FieldPathString(v.Proto.GetField())
		if v.Proto.GetForKey() {
			field += " (a key)"
		}
		parts = append(parts, field+": "+v.Proto.GetMessage())
	}
	return errors.New(strings.Join(parts, "; "))
}

// dbTime is t as PostgreSQL keeps it (UTC, microseconds), so that a dry run
// shows what a real run would store.
func dbTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}
