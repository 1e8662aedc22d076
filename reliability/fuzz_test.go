package reliability

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecachev2 "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// The fuzz targets send arbitrary bodies, as JSON or binary, to one RPC of a
// live server and check the answer against the database before and after:
// a request that does not decode or validate is invalid_argument and changes
// nothing; a valid one is never invalid_argument; no answer is internal,
// unavailable or unknown, or leaks internal detail; and what an RPC reports
// is what the database holds. Seeds live in testdata/fuzz/<target>; plain
// `go test` runs them, `go test -fuzz=^FuzzPut$` explores.

func FuzzGet(f *testing.F) { fuzzRPC(f, cachev1connect.CacheServiceGetProcedure) }

func FuzzPut(f *testing.F) { fuzzRPC(f, cachev1connect.CacheServicePutProcedure) }

func FuzzDelete(f *testing.F) { fuzzRPC(f, cachev1connect.CacheServiceDeleteProcedure) }

func FuzzGetOrExtendReservation(f *testing.F) {
	fuzzRPC(f, cachev1connect.CacheServiceGetOrExtendReservationProcedure)
}

func FuzzReleaseReservation(f *testing.F) {
	fuzzRPC(f, cachev1connect.CacheServiceReleaseReservationProcedure)
}

// fuzzTarget says how one RPC is fuzzed.
type fuzzTarget struct {
	// name is the Fuzz function, and its seed corpus in testdata/fuzz.
	name   string
	newReq func() request
	check  checkFunc
}

// fuzzTargets has an entry for every RPC the edge serves, by full
// procedure name (another service may have the same method names);
// TestEveryRPCIsFuzzed fails when one is missing.
var fuzzTargets = map[string]fuzzTarget{
	cachev1connect.CacheServiceGetProcedure:    {"FuzzGet", func() request { return &cachev1.GetRequest{} }, checkGet},
	cachev1connect.CacheServicePutProcedure:    {"FuzzPut", func() request { return &cachev1.PutRequest{} }, checkPut},
	cachev1connect.CacheServiceDeleteProcedure: {"FuzzDelete", func() request { return &cachev1.DeleteRequest{} }, checkDelete},
	cachev1connect.CacheServiceGetOrExtendReservationProcedure: {"FuzzGetOrExtendReservation",
		func() request { return &cachev1.GetOrExtendReservationRequest{} }, checkClaim},
	cachev1connect.CacheServiceReleaseReservationProcedure: {"FuzzReleaseReservation",
		func() request { return &cachev1.ReleaseReservationRequest{} }, checkRelease},

	flytecachev2connect.CacheServiceGetProcedure:                    {"FuzzFlyteGet", newFlyteGet, checkFlyteGet},
	flytecachev2connect.CacheServicePutProcedure:                    {"FuzzFlytePut", newFlytePut, checkFlytePut},
	flytecachev2connect.CacheServiceDeleteProcedure:                 {"FuzzFlyteDelete", newFlyteDelete, checkDelete},
	flytecachev2connect.CacheServiceGetOrExtendReservationProcedure: {"FuzzFlyteGetOrExtendReservation", newFlyteClaim, checkFlyteClaim},
	flytecachev2connect.CacheServiceReleaseReservationProcedure:     {"FuzzFlyteReleaseReservation", newFlyteRelease, checkFlyteRelease},
}

// request is what every request message has.
type request interface {
	proto.Message
	GetScope() *cachev1.Scope
	GetKey() string
}

// state is what the database holds for one identity, and in all.
type state struct {
	entry        *store.Entry       // nil when absent
	reservation  *store.Reservation // nil when absent
	entries      int
	reservations int
}

// outcome is one fuzz call: the request as the test decoded it (nil if it
// does not decode), the answer, and the database around it.
type outcome struct {
	req           request
	resp          rawResponse
	binary        bool
	before, after state
	sent          time.Time // just before the request left
}

type checkFunc func(t *testing.T, o outcome)

// allowedCodes are the codes each RPC may answer to any input while the
// database is up, by full procedure name; TestEveryRPCIsFuzzed fails when
// a served RPC has none.
var allowedCodes = map[string][]connect.Code{
	cachev1connect.CacheServiceGetProcedure:                    {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	cachev1connect.CacheServicePutProcedure:                    {0, connect.CodeInvalidArgument, connect.CodeAlreadyExists},
	cachev1connect.CacheServiceDeleteProcedure:                 {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	cachev1connect.CacheServiceGetOrExtendReservationProcedure: {0, connect.CodeInvalidArgument},
	cachev1connect.CacheServiceReleaseReservationProcedure:     {0, connect.CodeInvalidArgument},

	// Flyte's API answers with the same codes as ours.
	flytecachev2connect.CacheServiceGetProcedure:                    {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	flytecachev2connect.CacheServicePutProcedure:                    {0, connect.CodeInvalidArgument, connect.CodeAlreadyExists},
	flytecachev2connect.CacheServiceDeleteProcedure:                 {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	flytecachev2connect.CacheServiceGetOrExtendReservationProcedure: {0, connect.CodeInvalidArgument},
	flytecachev2connect.CacheServiceReleaseReservationProcedure:     {0, connect.CodeInvalidArgument},
}

// fuzzRPC fuzzes procedure as its fuzzTargets entry says.
func fuzzRPC(f *testing.F, procedure string) {
	target, ok := fuzzTargets[procedure]
	codes, hasCodes := allowedCodes[procedure]
	if !ok || !hasCodes {
		f.Fatalf("%s needs an entry in fuzzTargets and allowedCodes", procedure)
	}
	newReq, check := target.newReq, target.check
	withAuth := os.Getenv(fuzzAuthEnv) == "1"
	var header http.Header
	start := setup
	if withAuth {
		start = setupAuthed
		header = http.Header{"Authorization": {"Bearer " + adminToken}}
	}
	b := start(f, manager.DefaultConfig())
	b.populate(f)
	f.Fuzz(func(t *testing.T, binary bool, body []byte) {
		req, valid := decodeRequest(newReq(), binary, body)
		before := b.state(t, req)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		sent := time.Now()
		contentType := "application/json"
		if binary {
			contentType = "application/proto"
		}
		var resp rawResponse
		if binary && len(body)%2 == 1 {
			// Half the binary inputs go over gRPC, which grpc-go serves
			// (the in-process server is split as the binary's is): every
			// check holds for both protocols.
			resp = b.postGRPC(ctx, t, procedure, body, header)
		} else {
			resp = b.post(ctx, t, procedure, contentType, bytes.NewReader(body), header)
		}
		after := b.state(t, req)
		if withAuth && resp.code == connect.CodePermissionDenied && (req == nil || req.GetScope().GetOrg() != authedOrg) {
			// Outside the token's grant: refused before validation.
			assertNoLeak(t, resp.msg)
			assertUnchanged(t, before, after)
			return
		}
		o := outcome{req: req, resp: resp, binary: binary, before: before, after: after, sent: sent}

		assertNoLeak(t, resp.msg)
		if !containsCode(codes, resp.code) {
			t.Fatalf("code %v (%q), want one of %v", resp.code, resp.msg, codes)
		}
		tooLarge := resp.code == connect.CodeInvalidArgument && strings.Contains(resp.msg, "too large to index")
		switch {
		case !valid && resp.code != connect.CodeInvalidArgument:
			t.Fatalf("invalid request %v answered %v, want invalid_argument", req, resp.code)
		case valid && resp.code == connect.CodeInvalidArgument && !tooLarge:
			t.Fatalf("valid request %v answered invalid_argument: %q", req, resp.msg)
		}
		if resp.code != 0 {
			assertUnchanged(t, before, after)
		}
		if valid {
			check(t, o)
		}
	})
}

// decodeRequest decodes body as the server does (unknown JSON fields are
// ignored) and validates it against the proto's rules.
func decodeRequest(msg request, binary bool, body []byte) (_ request, valid bool) {
	var err error
	if binary {
		err = proto.Unmarshal(body, msg)
	} else {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, msg)
	}
	if err != nil {
		return nil, false
	}
	valid = protovalidate.Validate(msg) == nil && durationsValid(msg)
	if fr, ok := msg.(flyteRequest); ok && valid {
		valid = fr.valid(binary)
	}
	return msg, valid
}

// durationsValid checks what the manager checks beyond the proto's rules: a
// set duration must be well-formed (binary input can carry nanos out of
// range, which protovalidate's gt rule lets through), and a heartbeat at
// least the minimum.
func durationsValid(msg request) bool {
	switch m := msg.(type) {
	case *cachev1.PutRequest:
		return m.MaxAge == nil || m.MaxAge.CheckValid() == nil
	case *cachev1.GetOrExtendReservationRequest:
		return heartbeatValid(m.HeartbeatInterval)
	}
	return true
}

// heartbeatValid is what the manager accepts as a requested heartbeat: none,
// or a well-formed one of at least --min-heartbeat (the fuzzed server runs
// manager.DefaultConfig).
func heartbeatValid(d *durationpb.Duration) bool {
	return d == nil || d.CheckValid() == nil && d.AsDuration() >= manager.DefaultConfig().MinHeartbeat
}

// state reads what the database holds for req's identity (when it can be
// looked up at all) and the row counts.
func (b *testBundle) state(t testing.TB, req request) state {
	t.Helper()
	var s state
	s.entries, s.reservations = b.counts(t)
	if req == nil || req.GetScope() == nil {
		return s
	}
	id := store.ID{Org: req.GetScope().GetOrg(), Project: req.GetScope().GetProject(), Domain: req.GetScope().GetDomain(), Key: req.GetKey()}
	if strings.Contains(id.Org+id.Project+id.Domain+id.Key, "\x00") {
		return s // PostgreSQL text cannot even be asked about NUL; such requests are invalid
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e, err := b.store.GetEntry(ctx, id); err == nil {
		s.entry = &e
	} else if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read entry: %v", err)
	}
	if r, err := b.store.GetReservation(ctx, id); err == nil {
		s.reservation = &r
	} else if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read reservation: %v", err)
	}
	return s
}

// populate stores an entry and a reservation on the identities the seeds
// use, so that Get, Delete and the reservation RPCs meet existing rows too.
func (b *testBundle) populate(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, e := range []store.Entry{
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "k"}, URI: "s3://b/k", Labels: map[string]string{"a": "b"}},
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "inline"}, Inline: []byte{0, 1, 2}, SourceName: "t"},
		// Written through Flyte's API: a URI and a LiteralMap, with Flyte's source.
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "flyte"}, URI: "s3://b/f", SourceName: "t", SourceVersion: "v",
			FlyteSource: flyteSourceBytes},
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "literals"}, Inline: []byte{0x0a, 0x03, 0x0a, 0x01, 'x'}, Literals: true,
			SourceName: "t", SourceVersion: "v", FlyteSource: flyteSourceBytes},
	} {
		if err := b.store.PutEntry(ctx, e, store.Replace{Always: true}); err != nil {
			t.Fatalf("populate entry: %v", err)
		}
	}
	err := b.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, err := tx.ClaimReservation(ctx, store.Claim{
			ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "held"}, OwnerID: "w1",
			HeartbeatInterval: time.Hour, Lease: 24 * time.Hour,
		})
		return err
	})
	if err != nil {
		t.Fatalf("populate reservation: %v", err)
	}
}

func containsCode(codes []connect.Code, c connect.Code) bool { return slices.Contains(codes, c) }

// assertUnchanged fails if a refused request changed the database.
func assertUnchanged(t *testing.T, before, after state) {
	t.Helper()
	if before.entries != after.entries || before.reservations != after.reservations {
		t.Fatalf("refused request changed row counts: entries %d -> %d, reservations %d -> %d",
			before.entries, after.entries, before.reservations, after.reservations)
	}
	if !sameEntry(before.entry, after.entry) {
		t.Fatalf("refused request changed the entry: %+v -> %+v", before.entry, after.entry)
	}
	if !sameReservation(before.reservation, after.reservation) {
		t.Fatalf("refused request changed the reservation: %+v -> %+v", before.reservation, after.reservation)
	}
}

func sameEntry(a, b *store.Entry) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.URI == b.URI && bytes.Equal(a.Inline, b.Inline) && a.SourceName == b.SourceName &&
		a.SourceVersion == b.SourceVersion && maps.Equal(a.Labels, b.Labels) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.LastUpdatedAt.Equal(b.LastUpdatedAt)
}

func sameReservation(a, b *store.Reservation) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.OwnerID == b.OwnerID && a.HeartbeatInterval == b.HeartbeatInterval && a.ExpiresAt.Equal(b.ExpiresAt)
}

// decodeResponse decodes a successful response body in the request's codec.
func decodeResponse(t *testing.T, o outcome, msg proto.Message) {
	t.Helper()
	var err error
	if o.binary {
		err = proto.Unmarshal(o.resp.body, msg)
	} else {
		err = protojson.Unmarshal(o.resp.body, msg)
	}
	if err != nil {
		t.Fatalf("decode %T: %v (%q)", msg, err, o.resp.body)
	}
}

// matchesOutput reports whether the stored entry e holds exactly out.
func matchesOutput(e *store.Entry, out *cachev1.CachedOutput) bool {
	if e == nil {
		return false
	}
	md := out.GetMetadata()
	if e.SourceName != md.GetSource().GetName() || e.SourceVersion != md.GetSource().GetVersion() || !maps.Equal(e.Labels, md.GetLabels()) {
		return false
	}
	switch v := out.GetValue().(type) {
	case *cachev1.CachedOutput_Uri:
		return e.URI == v.Uri
	case *cachev1.CachedOutput_Inline:
		return e.URI == "" && bytes.Equal(e.Inline, v.Inline)
	}
	return false
}

func checkGet(t *testing.T, o outcome) {
	switch o.resp.code {
	case 0:
		var resp cachev1.GetResponse
		decodeResponse(t, o, &resp)
		if !matchesOutput(o.before.entry, resp.GetOutput()) {
			t.Fatalf("Get answered %v, database held %+v", resp.GetOutput(), o.before.entry)
		}
	case connect.CodeNotFound:
		if o.before.entry != nil {
			t.Fatalf("Get answered not_found, database held %+v", o.before.entry)
		}
	}
	assertUnchanged(t, o.before, o.after)
}

func checkPut(t *testing.T, o outcome) {
	req := o.req.(*cachev1.PutRequest)
	switch o.resp.code {
	case 0:
		if o.before.entry != nil && !req.GetOverwrite() && req.GetMaxAge() == nil {
			t.Fatalf("Put replaced %+v without overwrite or max_age", o.before.entry)
		}
		if !matchesOutput(o.after.entry, req.GetOutput()) {
			t.Fatalf("Put succeeded, database holds %+v, want %v", o.after.entry, req.GetOutput())
		}
		if o.before.entry != nil && !o.after.entry.CreatedAt.Equal(o.before.entry.CreatedAt) {
			t.Fatalf("Put changed created_at %v -> %v", o.before.entry.CreatedAt, o.after.entry.CreatedAt)
		}
	case connect.CodeAlreadyExists:
		if o.before.entry == nil || req.GetOverwrite() {
			t.Fatalf("Put answered already_exists with entry %+v, overwrite %v", o.before.entry, req.GetOverwrite())
		}
	}
}

func checkDelete(t *testing.T, o outcome) {
	switch o.resp.code {
	case 0:
		if o.before.entry == nil || o.after.entry != nil {
			t.Fatalf("Delete succeeded, entry was %+v, is %+v", o.before.entry, o.after.entry)
		}
	case connect.CodeNotFound:
		if o.before.entry != nil {
			t.Fatalf("Delete answered not_found, database held %+v", o.before.entry)
		}
	}
}

func checkClaim(t *testing.T, o outcome) {
	if o.resp.code != 0 {
		return
	}
	req := o.req.(*cachev1.GetOrExtendReservationRequest)
	var resp cachev1.GetOrExtendReservationResponse
	decodeResponse(t, o, &resp)
	r, held := resp.GetReservation(), o.after.reservation
	if held == nil || r.GetOwnerId() != held.OwnerID || !r.GetExpiresAt().AsTime().Equal(held.ExpiresAt) {
		t.Fatalf("GetOrExtendReservation answered %v, database holds %+v", r, held)
	}
	prev := o.before.reservation
	switch {
	case prev == nil || prev.OwnerID == req.GetOwnerId() || !prev.ExpiresAt.After(o.sent):
		if held.OwnerID != req.GetOwnerId() {
			t.Fatalf("reservation %+v free or the caller's went to %q, want %q", prev, held.OwnerID, req.GetOwnerId())
		}
	case prev.ExpiresAt.After(time.Now()): // another owner's, alive throughout the call
		if !sameReservation(prev, held) {
			t.Fatalf("live reservation %+v of another owner changed to %+v", prev, held)
		}
	}
}

func checkRelease(t *testing.T, o outcome) {
	if o.resp.code != 0 {
		return
	}
	req := o.req.(*cachev1.ReleaseReservationRequest)
	if prev := o.before.reservation; prev != nil && prev.OwnerID == req.GetOwnerId() {
		if o.after.reservation != nil {
			t.Fatalf("owner released, reservation still %+v", o.after.reservation)
		}
	} else if !sameReservation(o.before.reservation, o.after.reservation) {
		t.Fatalf("release by a non-owner changed %+v to %+v", o.before.reservation, o.after.reservation)
	}
}

// Flyte's cache API (flyteidl2.cacheservice.v2) gets the same treatment: the
// same server, table and invariants, through Flyte's messages.

func FuzzFlyteGet(f *testing.F) { fuzzRPC(f, flytecachev2connect.CacheServiceGetProcedure) }

func FuzzFlytePut(f *testing.F) { fuzzRPC(f, flytecachev2connect.CacheServicePutProcedure) }

func FuzzFlyteDelete(f *testing.F) { fuzzRPC(f, flytecachev2connect.CacheServiceDeleteProcedure) }

func FuzzFlyteGetOrExtendReservation(f *testing.F) {
	fuzzRPC(f, flytecachev2connect.CacheServiceGetOrExtendReservationProcedure)
}

func FuzzFlyteReleaseReservation(f *testing.F) {
	fuzzRPC(f, flytecachev2connect.CacheServiceReleaseReservationProcedure)
}

func newFlyteGet() request {
	m := &flytecachev2.GetCacheRequest{}
	return flyteRequest{m, m.GetIdentifier, func() string { return m.GetBaseRequest().GetKey() }}
}

func newFlytePut() request {
	m := &flytecachev2.PutCacheRequest{}
	return flyteRequest{m, m.GetIdentifier, func() string { return m.GetBaseRequest().GetKey() }}
}

func newFlyteDelete() request {
	m := &flytecachev2.DeleteCacheRequest{}
	return flyteRequest{m, m.GetIdentifier, func() string { return m.GetBaseRequest().GetKey() }}
}

func newFlyteClaim() request {
	m := &flytecachev2.GetOrExtendReservationRequest{}
	return flyteRequest{m, m.GetIdentifier, func() string { return m.GetBaseRequest().GetKey() }}
}

func newFlyteRelease() request {
	m := &flytecachev2.ReleaseReservationRequest{}
	return flyteRequest{m, m.GetIdentifier, func() string { return m.GetBaseRequest().GetKey() }}
}

func checkFlyteClaim(t *testing.T, o outcome) {
	// Flyte's response is ours on the wire; only the owner is needed.
	o.req = &cachev1.GetOrExtendReservationRequest{OwnerId: o.req.(flyteRequest).Message.(*flytecachev2.GetOrExtendReservationRequest).GetBaseRequest().GetOwnerId()}
	checkClaim(t, o)
}

func checkFlyteRelease(t *testing.T, o outcome) {
	o.req = &cachev1.ReleaseReservationRequest{OwnerId: o.req.(flyteRequest).Message.(*flytecachev2.ReleaseReservationRequest).GetBaseRequest().GetOwnerId()}
	checkRelease(t, o)
}

// flyteSourceBytes is a stored Flyte source identifier (TASK t@v).
var flyteSourceBytes = []byte{0x08, 0x01, 0x22, 0x01, 't', 0x2a, 0x01, 'v'}

// flyteRequest lets a Flyte request stand where the fuzz harness expects
// ours: its identifier is our scope, its base_request's key our key.
type flyteRequest struct {
	proto.Message
	identifier func() *flytecachev2.Identifier
	key        func() string
}

func (r flyteRequest) GetScope() *cachev1.Scope {
	id := r.identifier()
	if id == nil {
		return nil
	}
	return &cachev1.Scope{Org: id.GetOrg(), Project: id.GetProject(), Domain: id.GetDomain()}
}

func (r flyteRequest) GetKey() string { return r.key() }

// valid is what Flyte's API checks beyond the proto's rules: well-formed
// durations, a heartbeat of at least the minimum (zero allowed, it means the
// maximum), and literals only over binary protobuf.
func (r flyteRequest) valid(binary bool) bool {
	switch m := r.Message.(type) {
	case *flytecachev2.PutCacheRequest:
		if d := m.GetBaseRequest().GetOverwrite().GetMaxAge(); d != nil && d.CheckValid() != nil {
			return false
		}
		if m.GetBaseRequest().GetOutput().GetOutputLiterals() != nil && !binary {
			return false
		}
	case *flytecachev2.GetOrExtendReservationRequest:
		if d := m.GetBaseRequest().GetHeartbeatInterval(); d.GetSeconds() != 0 || d.GetNanos() != 0 {
			return heartbeatValid(d)
		}
	}
	return true
}

// flyteReadable reports whether Flyte's Get may serve e: a Flyte source
// identifier, and a URI or a LiteralMap.
func flyteReadable(e *store.Entry) bool {
	return e != nil && e.FlyteSource != nil && (e.URI != "" || e.Literals)
}

// matchesFlyteOutput reports whether the stored entry e holds exactly out.
func matchesFlyteOutput(t *testing.T, e *store.Entry, out *flytecache.CachedOutput) bool {
	t.Helper()
	if e == nil || e.FlyteSource == nil {
		return false
	}
	src := &flytecore.Identifier{}
	if err := proto.Unmarshal(e.FlyteSource, src); err != nil {
		t.Fatalf("stored source: %v", err)
	}
	md := out.GetMetadata()
	if !proto.Equal(src, md.GetSourceIdentifier()) || e.SourceName != src.GetName() || e.SourceVersion != src.GetVersion() ||
		!maps.Equal(e.Labels, md.GetKeyMap().GetValues()) {
		return false
	}
	switch v := out.GetOutput().(type) {
	case *flytecache.CachedOutput_OutputUri:
		return e.URI == v.OutputUri && !e.Literals
	case *flytecache.CachedOutput_OutputLiterals:
		b, err := proto.Marshal(v.OutputLiterals)
		return err == nil && e.URI == "" && e.Literals && bytes.Equal(e.Inline, b)
	}
	return false
}

func checkFlyteGet(t *testing.T, o outcome) {
	switch o.resp.code {
	case 0:
		var resp flytecache.GetCacheResponse
		decodeResponse(t, o, &resp)
		md := resp.GetOutput().GetMetadata()
		if md.GetLastUpdatedAt() == nil || md.GetSourceIdentifier() == nil || resp.GetOutput().GetOutput() == nil {
			t.Fatalf("Get answered %v, which Flyte's client refuses", resp.GetOutput())
		}
		if !o.binary && resp.GetOutput().GetOutputLiterals() != nil {
			return // JSON shows literals as {}; the bytes are checked over binary
		}
		if !flyteReadable(o.before.entry) || !matchesFlyteOutput(t, o.before.entry, resp.GetOutput()) {
			t.Fatalf("Get answered %v, database held %+v", resp.GetOutput(), o.before.entry)
		}
	case connect.CodeNotFound:
		if flyteReadable(o.before.entry) {
			t.Fatalf("Get answered not_found, database held %+v", o.before.entry)
		}
	}
	assertUnchanged(t, o.before, o.after)
}

func checkFlytePut(t *testing.T, o outcome) {
	req := o.req.(flyteRequest).Message.(*flytecachev2.PutCacheRequest).GetBaseRequest()
	switch o.resp.code {
	case 0:
		if o.before.entry != nil && !req.GetOverwrite().GetOverwrite() && req.GetOverwrite().GetMaxAge() == nil {
			t.Fatalf("Put replaced %+v without overwrite or max_age", o.before.entry)
		}
		if !matchesFlyteOutput(t, o.after.entry, req.GetOutput()) {
			t.Fatalf("Put succeeded, database holds %+v, want %v", o.after.entry, req.GetOutput())
		}
		if o.before.entry != nil && !o.after.entry.CreatedAt.Equal(o.before.entry.CreatedAt) {
			t.Fatalf("Put changed created_at %v -> %v", o.before.entry.CreatedAt, o.after.entry.CreatedAt)
		}
	case connect.CodeAlreadyExists:
		if o.before.entry == nil || req.GetOverwrite().GetOverwrite() {
			t.Fatalf("Put answered already_exists with entry %+v, overwrite %v", o.before.entry, req.GetOverwrite())
		}
	}
}
