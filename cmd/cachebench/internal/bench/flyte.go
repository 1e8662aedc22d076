package bench

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
)

// flyteIdentifier is where the Flyte driver writes: a domain of its own, so
// that its entries (which carry Flyte's metadata) never meet the keys other
// protocols preload under scope.
var flyteIdentifier = &flytecachev2.Identifier{Org: scope.Org, Project: scope.Project, Domain: "flyte"}

// flyteSource is the task every Flyte Put says produced its output; Flyte's
// client needs one on every hit.
var flyteSource = &flytecore.Identifier{
	ResourceType: flytecore.ResourceType_TASK, Project: scope.Project, Domain: "flyte", Name: "cachebench.task", Version: "v1",
}

// flyteDriver calls Flyte's API as Flyte's executor does: Connect binary
// over HTTP/1.1, outputs as literal maps.
type flyteDriver struct {
	client flytecachev2connect.CacheServiceClient
}

// literalsOf is a literal map of payload's size: one map entry whose bytes
// are payload. The LiteralMap is declared without fields here, so it keeps
// them as unknown fields, and the server stores them unchanged.
func literalsOf(payload []byte) (*flytecore.LiteralMap, error) {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	lm := &flytecore.LiteralMap{}
	return lm, proto.Unmarshal(b, lm)
}

func (d *flyteDriver) Get(ctx context.Context, key string) error {
	_, err := d.client.Get(ctx, connect.NewRequest(&flytecachev2.GetCacheRequest{
		BaseRequest: &flytecache.GetCacheRequest{Key: key},
		Identifier:  flyteIdentifier,
	}))
	return err
}

func (d *flyteDriver) Put(ctx context.Context, key string, payload []byte, overwrite bool) error {
	lm, err := literalsOf(payload)
	if err != nil {
		return err
	}
	_, err = d.client.Put(ctx, connect.NewRequest(&flytecachev2.PutCacheRequest{
		BaseRequest: &flytecache.PutCacheRequest{
			Key: key,
			Output: &flytecache.CachedOutput{
				Output:   &flytecache.CachedOutput_OutputLiterals{OutputLiterals: lm},
				Metadata: &flytecache.Metadata{SourceIdentifier: flyteSource},
			},
			Overwrite: &flytecache.OverwriteOutput{Overwrite: overwrite},
		},
		Identifier: flyteIdentifier,
	}))
	return err
}

func (d *flyteDriver) Claim(ctx context.Context, key, owner string) (string, error) {
	res, err := d.client.GetOrExtendReservation(ctx, connect.NewRequest(&flytecachev2.GetOrExtendReservationRequest{
		BaseRequest: &flytecache.GetOrExtendReservationRequest{
			Key: key, OwnerId: owner, HeartbeatInterval: durationpb.New(claimHeartbeat),
		},
		Identifier: flyteIdentifier,
	}))
	if err != nil {
		return "", err
	}
	return res.Msg.GetReservation().GetOwnerId(), nil
}

func (d *flyteDriver) Release(ctx context.Context, key, owner string) error {
	_, err := d.client.ReleaseReservation(ctx, connect.NewRequest(&flytecachev2.ReleaseReservationRequest{
		BaseRequest: &flytecache.ReleaseReservationRequest{Key: key, OwnerId: owner},
		Identifier:  flyteIdentifier,
	}))
	return err
}
