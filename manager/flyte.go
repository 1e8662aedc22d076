package manager

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/store"
)

// This file is Flyte's cache API (flyteidl2.cacheservice.v2) over the same
// rules as ours: each method translates Flyte's request into ours and calls
// the same code path, so the two APIs cannot drift apart. identifier + key is
// scope + key, output_uri is uri, output_literals are inline bytes marked as
// a LiteralMap, key_map is labels, and source_identifier is kept whole beside
// source name and version.

// errFlyteUnreadable is the NOT_FOUND of an entry that exists but that
// Flyte's client could not use as a hit. Flyte's executor treats NOT_FOUND as
// a miss and runs the task, which is the only useful thing it can do.
var errFlyteUnreadable = errors.New("entry not found for Flyte's API: it was written through cacheservice.v1 " +
	"(inline bytes that are not a LiteralMap, or no Flyte source identifier)")

// FlyteGet answers Flyte's Get. Every hit carries what Flyte's client
// requires (metadata with last_updated_at and source_identifier, and an
// output it can decode); an entry that cannot is NOT_FOUND.
func (m *Manager) FlyteGet(ctx context.Context, req *flytecachev2.GetCacheRequest) (*flytecache.GetCacheResponse, error) {
	e, err := m.store.GetEntry(ctx, flyteID(req.GetIdentifier(), req.GetBaseRequest().GetKey()))
	if errors.Is(err, store.ErrNotFound) {
		m.observer.ObserveLookup(false)
	}
	if err != nil {
		return nil, m.toConnectError(ctx, "get", err)
	}
	out, ok := flyteOutputOf(e)
	// What Flyte's client cannot use is a miss for it, and counted as one.
	m.observer.ObserveLookup(ok)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errFlyteUnreadable)
	}
	return &flytecache.GetCacheResponse{Output: out}, nil
}

// FlytePut answers Flyte's Put with our Put's rules: atomic, ALREADY_EXISTS
// unless overwrite is set or the entry is older than max_age (a set zero
// max_age is an overwrite, as in Flyte's service), server timestamps,
// created_at kept on replace.
func (m *Manager) FlytePut(ctx context.Context, req *flytecachev2.PutCacheRequest) (*flytecache.PutCacheResponse, error) {
	base := req.GetBaseRequest()
	out := base.GetOutput()
	src := out.GetMetadata().GetSourceIdentifier()
	overwrite, maxAge := base.GetOverwrite().GetOverwrite(), base.GetOverwrite().GetMaxAge()
	if maxAge != nil && maxAge.GetSeconds() == 0 && maxAge.GetNanos() == 0 {
		// Flyte's service replaces an entry older than max_age, and
		// every entry is older than zero: a zero max_age is an
		// overwrite there, so it is one here (ours refuses zero).
		overwrite, maxAge = true, nil
	}
	ours := &cachev1.PutRequest{
		Scope:     flyteScope(req.GetIdentifier()),
		Key:       base.GetKey(),
		Overwrite: overwrite,
		MaxAge:    maxAge,
		Output: &cachev1.CachedOutput{Metadata: &cachev1.Metadata{
			Labels: out.GetMetadata().GetKeyMap().GetValues(),
		}},
	}
	if src != nil {
		ours.Output.Metadata.Source = &cachev1.Source{Name: src.GetName(), Version: src.GetVersion()}
	}
	literals := false
	switch v := out.GetOutput().(type) {
	case *flytecache.CachedOutput_OutputUri:
		ours.Output.Value = &cachev1.CachedOutput_Uri{Uri: v.OutputUri}
	case *flytecache.CachedOutput_OutputLiterals:
		// The LiteralMap is declared without fields, so this is the bytes
		// the client sent, unchanged.
		b, err := proto.Marshal(v.OutputLiterals)
		if err != nil {
			return nil, invalidArgument("base_request.output.output_literals", "cannot be encoded")
		}
		if len(b) > m.cfg.MaxInlineBytes {
			return nil, invalidArgument("base_request.output.output_literals", "is %d bytes, more than the limit of %d", len(b), m.cfg.MaxInlineBytes)
		}
		ours.Output.Value = &cachev1.CachedOutput_Inline{Inline: b}
		literals = true
	default:
		return nil, invalidArgument("base_request.output.output", "exactly one of output_literals or output_uri is required")
	}
	e, replace, err := m.entryOf(ours)
	if err != nil {
		return nil, err
	}
	e.Literals = literals
	if src != nil {
		if e.FlyteSource, err = proto.Marshal(src); err != nil {
			return nil, invalidArgument("base_request.output.metadata.source_identifier", "cannot be encoded")
		}
	}
	if _, err := m.putEntry(ctx, e, replace); err != nil {
		return nil, err
	}
	return &flytecache.PutCacheResponse{}, nil
}

// FlyteDelete answers Flyte's Delete: it removes the entry (never a blob),
// or NOT_FOUND.
func (m *Manager) FlyteDelete(ctx context.Context, req *flytecachev2.DeleteCacheRequest) (*flytecache.DeleteCacheResponse, error) {
	if _, err := m.Delete(ctx, &cachev1.DeleteRequest{
		Scope: flyteScope(req.GetIdentifier()),
		Key:   req.GetBaseRequest().GetKey(),
	}); err != nil {
		return nil, err
	}
	return &flytecache.DeleteCacheResponse{}, nil
}

// FlyteGetOrExtendReservation answers Flyte's GetOrExtendReservation with
// our claim. A zero heartbeat_interval means "the server's maximum", as in
// Flyte's own service; ours would refuse it.
func (m *Manager) FlyteGetOrExtendReservation(ctx context.Context, req *flytecachev2.GetOrExtendReservationRequest) (*flytecache.GetOrExtendReservationResponse, error) {
	base := req.GetBaseRequest()
	heartbeat := base.GetHeartbeatInterval()
	if heartbeat != nil && heartbeat.GetSeconds() == 0 && heartbeat.GetNanos() == 0 {
		heartbeat = nil
	}
	resp, err := m.GetOrExtendReservation(ctx, &cachev1.GetOrExtendReservationRequest{
		Scope:             flyteScope(req.GetIdentifier()),
		Key:               base.GetKey(),
		OwnerId:           base.GetOwnerId(),
		HeartbeatInterval: heartbeat,
	})
	if err != nil {
		return nil, err
	}
	r := resp.GetReservation()
	return &flytecache.GetOrExtendReservationResponse{Reservation: &flytecache.Reservation{
		Key:               r.GetKey(),
		OwnerId:           r.GetOwnerId(),
		HeartbeatInterval: r.GetHeartbeatInterval(),
		ExpiresAt:         r.GetExpiresAt(),
	}}, nil
}

// FlyteReleaseReservation answers Flyte's ReleaseReservation: releasing a
// missing reservation, or another owner's, succeeds and changes nothing.
func (m *Manager) FlyteReleaseReservation(ctx context.Context, req *flytecachev2.ReleaseReservationRequest) (*flytecache.ReleaseReservationResponse, error) {
	base := req.GetBaseRequest()
	if _, err := m.ReleaseReservation(ctx, &cachev1.ReleaseReservationRequest{
		Scope:   flyteScope(req.GetIdentifier()),
		Key:     base.GetKey(),
		OwnerId: base.GetOwnerId(),
	}); err != nil {
		return nil, err
	}
	return &flytecache.ReleaseReservationResponse{}, nil
}

// flyteScope is our scope for Flyte's identifier: the same three parts, the
// org included (Flyte's own service drops it).
func flyteScope(id *flytecachev2.Identifier) *cachev1.Scope {
	return &cachev1.Scope{Org: id.GetOrg(), Project: id.GetProject(), Domain: id.GetDomain()}
}

func flyteID(id *flytecachev2.Identifier, key string) store.ID {
	return idOf(flyteScope(id), key)
}

// flyteOutputOf is e as Flyte's client must see it, or false when e cannot be
// a hit for that client.
func flyteOutputOf(e store.Entry) (*flytecache.CachedOutput, bool) {
	src, ok := flyteSourceOf(e)
	if !ok {
		return nil, false
	}
	out := &flytecache.CachedOutput{Metadata: &flytecache.Metadata{
		SourceIdentifier: src,
		CreatedAt:        timestamppb.New(e.CreatedAt),
		LastUpdatedAt:    timestamppb.New(e.LastUpdatedAt),
	}}
	if len(e.Labels) > 0 {
		out.Metadata.KeyMap = &flytecache.KeyMapMetadata{Values: e.Labels}
	}
	switch {
	case e.URI != "":
		out.Output = &flytecache.CachedOutput_OutputUri{OutputUri: e.URI}
	case e.Literals:
		lm := &flytecore.LiteralMap{}
		// Bytes we stored from a parsed message: they parse again, and
		// the LiteralMap keeps them all as unknown fields.
		if err := proto.Unmarshal(e.Inline, lm); err != nil {
			return nil, false
		}
		out.Output = &flytecache.CachedOutput_OutputLiterals{OutputLiterals: lm}
	default:
		// Inline bytes from cacheservice.v1 are not known to be a
		// LiteralMap; guessing would hand the executor garbage outputs.
		return nil, false
	}
	return out, true
}

// flyteSourceOf decodes the stored Flyte source identifier. The store hands
// it over only while no replica of the previous version has overwritten the
// entry since it was stored (migration 004), so it describes this write.
func flyteSourceOf(e store.Entry) (*flytecore.Identifier, bool) {
	if e.FlyteSource == nil {
		return nil, false
	}
	src := &flytecore.Identifier{}
	if err := proto.Unmarshal(e.FlyteSource, src); err != nil {
		return nil, false
	}
	return src, true
}
