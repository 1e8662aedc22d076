package flyteimport

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"buf.build/go/protovalidate"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
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
	// domain the stored key starts with; Flyte's executor sends its task's
	// identifier both as the request's scope and as the source.
	org := ""
	s, ok := scopeFromSource(r.Key, md.sourceProject(), md.sourceDomain())
	if ok {
		org = md.sourceOrg()
	} else {
		if s, err = scopeFromKey(r.Key, c.rules); err != nil {
			se := &splitError{}
			if errors.As(err, &se) {
				return skipped(se.reason, "%s", se.detail)
			}
			return skipped(ReasonUnsplittableKey, "%v", err)
		}
		fromKey = true
	}
	if org == "" {
		org = c.org
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
	if err := c.check(e, md); err != nil {
		return skipped(ReasonOverLimit, "%s", err)
	}
	return e, fromKey, nil
}

// check applies the limits a Put of e would meet: the proto's validation
// rules, the ones the server's interceptor runs, both those of our API (scope,
// key, URI, source, labels) and those of Flyte's API as we serve it (the
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
		return describeViolations(err)
	}
	flyteReq := &flytecachev2.PutCacheRequest{
		Identifier: &flytecachev2.Identifier{Org: e.ID.Org, Project: e.ID.Project, Domain: e.ID.Domain},
		BaseRequest: &flytecache.PutCacheRequest{
			Key: e.ID.Key,
			Output: &flytecache.CachedOutput{
				Output:   &flytecache.CachedOutput_OutputUri{OutputUri: e.URI},
				Metadata: md.msg,
			},
		},
	}
	return describeViolations(c.validator.Validate(flyteReq))
}

// describeViolations renders a validation error as one line naming each
// field and rule, without the field's value (which may be long, or private).
func describeViolations(err error) error {
	if err == nil {
		return nil
	}
	verr := &protovalidate.ValidationError{}
	if !errors.As(err, &verr) {
		return err
	}
	var parts []string
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
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
