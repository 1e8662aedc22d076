package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// Protocols the tool speaks. Ceiling is not a protocol but the raw-pgx
// ceiling: the store's statements run directly on a pool, no RPC between.
// ConnectJSON and ConnectProto go over HTTP/1.1, a connection per client,
// as browsers and most Connect clients without TLS do; ConnectH2 and GRPC
// multiplex every client on one HTTP/2 connection (h2c). Flyte is the path
// of Flyte's executor: Flyte's own API (flyteidl2.cacheservice.v2) in
// Connect binary over HTTP/1.1.
const (
	ConnectJSON  = "connect-json"
	ConnectProto = "connect-proto"
	ConnectH2    = "connect-h2"
	GRPC         = "grpc"
	Flyte        = "flyte"
	Ceiling      = "pgx"
)

// Protocols lists every RPC protocol, in the order reports show them.
var Protocols = []string{ConnectJSON, ConnectProto, ConnectH2, GRPC, Flyte}

// Driver performs the cache's operations one way or another: over an RPC
// protocol, or directly on the database for the ceiling. Workloads are
// written once against it, so both sides run the same operations.
type Driver interface {
	Get(ctx context.Context, key string) error
	Put(ctx context.Context, key string, payload []byte, overwrite bool) error
	// Claim asks for key's reservation for owner and returns who holds it.
	Claim(ctx context.Context, key, owner string) (holder string, err error)
	Release(ctx context.Context, key, owner string) error
}

// scope is where the benchmark writes; runs tell themselves apart by key.
var scope = &cachev1.Scope{Org: "bench", Project: "cachebench", Domain: "load"}

// claimHeartbeat is long enough that no reservation expires within a run:
// a contended claim must show exactly one owner throughout.
const claimHeartbeat = 10 * time.Second

// NewRPCDriver returns a driver that calls the service at baseURL over
// protocol. The transport keeps one connection per worker (HTTP/1.1) or
// multiplexes them on one (HTTP/2), so that no request pays for a dial.
func NewRPCDriver(baseURL, protocol string, concurrency int) (Driver, func(), error) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        concurrency + 8,
		MaxIdleConnsPerHost: concurrency + 8,
		IdleConnTimeout:     time.Minute,
	}
	var opts []connect.ClientOption
	switch protocol {
	case ConnectJSON:
		opts = append(opts, connect.WithProtoJSON())
	case ConnectProto, Flyte:
	case ConnectH2:
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	case GRPC:
		// gRPC needs HTTP/2; without TLS that is prior-knowledge h2c.
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
		opts = append(opts, connect.WithGRPC())
	default:
		return nil, nil, fmt.Errorf("unknown protocol %q (want one of %s)", protocol, strings.Join(Protocols, ", "))
	}
	client := &http.Client{Transport: tr}
	if protocol == Flyte {
		return &flyteDriver{client: flytecachev2connect.NewCacheServiceClient(client, baseURL, opts...)}, tr.CloseIdleConnections, nil
	}
	d := &rpcDriver{client: cachev1connect.NewCacheServiceClient(client, baseURL, opts...)}
	return d, tr.CloseIdleConnections, nil
}

type rpcDriver struct {
	client cachev1connect.CacheServiceClient
}

func (d *rpcDriver) Get(ctx context.Context, key string) error {
	_, err := d.client.Get(ctx, connect.NewRequest(&cachev1.GetRequest{Scope: scope, Key: key}))
	return err
}

func (d *rpcDriver) Put(ctx context.Context, key string, payload []byte, overwrite bool) error {
	_, err := d.client.Put(ctx, connect.NewRequest(&cachev1.PutRequest{
		Scope:     scope,
		Key:       key,
		Output:    &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: payload}},
		Overwrite: overwrite,
	}))
	return err
}

func (d *rpcDriver) Claim(ctx context.Context, key, owner string) (string, error) {
	res, err := d.client.GetOrExtendReservation(ctx, connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
		Scope:             scope,
		Key:               key,
		OwnerId:           owner,
		HeartbeatInterval: durationpb.New(claimHeartbeat),
	}))
	if err != nil {
		return "", err
	}
	return res.Msg.GetReservation().GetOwnerId(), nil
}

func (d *rpcDriver) Release(ctx context.Context, key, owner string) error {
	_, err := d.client.ReleaseReservation(ctx, connect.NewRequest(&cachev1.ReleaseReservationRequest{
		Scope: scope, Key: key, OwnerId: owner,
	}))
	return err
}

// NewCeilingDriver returns the raw-pgx ceiling: the store's own statements
// and transactions on a pool of its own (the claim decision runs in the
// store's SQL, by the database's clock). What it cannot do faster, the
// service cannot either.
func NewCeilingDriver(st *store.Store) Driver {
	return &ceilingDriver{store: st}
}

type ceilingDriver struct {
	store *store.Store
}

func idOf(key string) store.ID {
	return store.ID{Org: scope.Org, Project: scope.Project, Domain: scope.Domain, Key: key}
}

func (d *ceilingDriver) Get(ctx context.Context, key string) error {
	_, err := d.store.GetEntry(ctx, idOf(key))
	return asServiceError(ctx, err)
}

func (d *ceilingDriver) Put(ctx context.Context, key string, payload []byte, overwrite bool) error {
	err := d.store.PutEntry(ctx, store.Entry{ID: idOf(key), Inline: payload}, store.Replace{Always: overwrite})
	return asServiceError(ctx, err)
}

// Claim runs the store's claim, as the manager does: the plain read, and
// the locked pipeline only for a caller that may become or stay the owner.
func (d *ceilingDriver) Claim(ctx context.Context, key, owner string) (string, error) {
	lease := time.Duration(float64(claimHeartbeat) * manager.DefaultConfig().GraceMultiplier)
	res, err := d.store.ClaimReservation(ctx, store.Claim{ID: idOf(key), OwnerID: owner, HeartbeatInterval: claimHeartbeat, Lease: lease})
	return res.Current.OwnerID, asServiceError(ctx, err)
}

func (d *ceilingDriver) Release(ctx context.Context, key, owner string) error {
	_, err := d.store.ReleaseReservation(ctx, idOf(key), owner)
	return asServiceError(ctx, err)
}

// asServiceError gives a store error the code the service would answer it
// with (the manager's own mapping), so that both sides of a comparison count
// errors alike.
func asServiceError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(manager.ErrorCode(ctx, err), err)
}

// codeOf names the outcome of an operation by its Connect code: both the
// RPC drivers' errors and the ceiling's (asServiceError) carry one.
func codeOf(err error) string {
	if err == nil {
		return ""
	}
	return connect.CodeOf(err).String()
}
