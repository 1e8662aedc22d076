package manager

import (
	"context"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/store"
)

// Get returns the stored output of a key, or NOT_FOUND.
func (m *Manager) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	e, err := m.store.GetEntry(ctx, idOf(req.GetScope(), req.GetKey()))
	if errors.Is(err, store.ErrNotFound) {
		m.observer.ObserveLookup(false)
	}
	if err != nil {
		return nil, m.toConnectError(ctx, "get", err)
	}
	m.observer.ObserveLookup(true)
	return &cachev1.GetResponse{Output: outputOf(e)}, nil
}

// Put stores an output. An existing entry is replaced only when overwrite is
// set, or when max_age is set and the entry was last updated more than
// max_age ago; otherwise ALREADY_EXISTS. A replaced entry keeps its
// created_at. The decision and the write are one statement in the store,
// timed by the database's clock.
func (m *Manager) Put(ctx context.Context, req *cachev1.PutRequest) (*cachev1.PutResponse, error) {
	e, replace, err := m.entryOf(req)
	if err != nil {
		return nil, err
	}
	return m.putEntry(ctx, e, replace)
}

// entryOf is the entry and replace rule a Put asks for: the one place that
// applies the inline limit and the overwrite and max_age rules, for this API
// and Flyte's. The timestamps are the database's, set by the store.
func (m *Manager) entryOf(req *cachev1.PutRequest) (store.Entry, store.Replace, error) {
	out := req.GetOutput()
	e := store.Entry{
		ID:            idOf(req.GetScope(), req.GetKey()),
		SourceName:    out.GetMetadata().GetSource().GetName(),
		SourceVersion: out.GetMetadata().GetSource().GetVersion(),
		Labels:        out.GetMetadata().GetLabels(),
		// Timestamps are the database's; whatever the client sent is ignored.
	}
	switch v := out.GetValue().(type) {
	case *cachev1.CachedOutput_Uri:
		e.URI = v.Uri
	case *cachev1.CachedOutput_Inline:
		if len(v.Inline) > m.cfg.MaxInlineBytes {
			return store.Entry{}, store.Replace{}, invalidArgument("output.inline", "is %d bytes, more than the limit of %d", len(v.Inline), m.cfg.MaxInlineBytes)
		}
		e.Inline = v.Inline
	default:
		return store.Entry{}, store.Replace{}, invalidArgument("output.value", "exactly one of uri or inline is required")
	}
	replace := store.Replace{Always: req.GetOverwrite()}
	if req.MaxAge != nil {
		maxAge, err := positiveDuration("max_age", req.GetMaxAge())
		if err != nil {
			return store.Entry{}, store.Replace{}, err
		}
		replace.OlderThan = maxAge
	}
	return e, replace, nil
}

// putEntry stores e as replace allows.
func (m *Manager) putEntry(ctx context.Context, e store.Entry, replace store.Replace) (*cachev1.PutResponse, error) {
	if err := m.store.PutEntry(ctx, e, replace); err != nil {
		return nil, m.toConnectError(ctx, "put", err)
	}
	return &cachev1.PutResponse{}, nil
}

// Delete removes an entry, or returns NOT_FOUND.
func (m *Manager) Delete(ctx context.Context, req *cachev1.DeleteRequest) (*cachev1.DeleteResponse, error) {
	if err := m.store.DeleteEntry(ctx, idOf(req.GetScope(), req.GetKey())); err != nil {
		return nil, m.toConnectError(ctx, "delete", err)
	}
	return &cachev1.DeleteResponse{}, nil
}

func outputOf(e store.Entry) *cachev1.CachedOutput {
	out := &cachev1.CachedOutput{
		Metadata: &cachev1.Metadata{
			Labels:        e.Labels,
			CreatedAt:     timestamppb.New(e.CreatedAt),
			LastUpdatedAt: timestamppb.New(e.LastUpdatedAt),
		},
	}
	if e.SourceName != "" || e.SourceVersion != "" {
		out.Metadata.Source = &cachev1.Source{Name: e.SourceName, Version: e.SourceVersion}
	}
	if e.URI != "" {
		out.Value = &cachev1.CachedOutput_Uri{Uri: e.URI}
	} else {
		out.Value = &cachev1.CachedOutput_Inline{Inline: e.Inline}
	}
	return out
}
