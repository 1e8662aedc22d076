package reliability

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
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

func FuzzGet(f *testing.F) {
	fuzzRPC(f, "Get", func() request { return &cachev1.GetRequest{} }, checkGet)
}

func FuzzPut(f *testing.F) {
	fuzzRPC(f, "Put", func() request { return &cachev1.PutRequest{} }, checkPut)
}

func FuzzDelete(f *testing.F) {
	fuzzRPC(f, "Delete", func() request { return &cachev1.DeleteRequest{} }, checkDelete)
}

func FuzzGetOrExtendReservation(f *testing.F) {
	fuzzRPC(f, "GetOrExtendReservation", func() request { return &cachev1.GetOrExtendReservationRequest{} }, checkClaim)
}

func FuzzReleaseReservation(f *testing.F) {
	fuzzRPC(f, "ReleaseReservation", func() request { return &cachev1.ReleaseReservationRequest{} }, checkRelease)
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
// database is up.
var allowedCodes = map[string][]connect.Code{
	"Get":                    {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	"Put":                    {0, connect.CodeInvalidArgument, connect.CodeAlreadyExists},
	"Delete":                 {0, connect.CodeInvalidArgument, connect.CodeNotFound},
	"GetOrExtendReservation": {0, connect.CodeInvalidArgument},
	"ReleaseReservation":     {0, connect.CodeInvalidArgument},
}

func fuzzRPC(f *testing.F, procedure string, newReq func() request, check checkFunc) {
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
		resp := b.post(ctx, t, procedure, contentType, bytes.NewReader(body), header)
		after := b.state(t, req)
		if withAuth && resp.code == connect.CodePermissionDenied && req.GetScope().GetOrg() != authedOrg {
			// Outside the token's grant: refused before validation.
			assertNoLeak(t, resp.msg)
			assertUnchanged(t, before, after)
			return
		}
		o := outcome{req: req, resp: resp, binary: binary, before: before, after: after, sent: sent}

		assertNoLeak(t, resp.msg)
		if !containsCode(allowedCodes[procedure], resp.code) {
			t.Fatalf("code %v (%q), want one of %v", resp.code, resp.msg, allowedCodes[procedure])
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
	return msg, protovalidate.Validate(msg) == nil && durationsValid(msg)
}

// durationsValid checks what the manager checks beyond the proto's rules: a
// set duration must be well-formed (binary input can carry nanos out of
// range, which protovalidate's gt rule lets through).
func durationsValid(msg request) bool {
	var d *durationpb.Duration
	switch m := msg.(type) {
	case *cachev1.PutRequest:
		d = m.MaxAge
	case *cachev1.GetOrExtendReservationRequest:
		d = m.HeartbeatInterval
	}
	return d == nil || d.CheckValid() == nil
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
	now := time.Now().UTC().Truncate(time.Microsecond)
	for _, e := range []store.Entry{
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "k"}, URI: "s3://b/k", Labels: map[string]string{"a": "b"}, CreatedAt: now, LastUpdatedAt: now},
		{ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "inline"}, Inline: []byte{0, 1, 2}, SourceName: "t", CreatedAt: now, LastUpdatedAt: now},
	} {
		if err := b.store.PutEntry(ctx, e, store.Replace{Always: true}); err != nil {
			t.Fatalf("populate entry: %v", err)
		}
	}
	err := b.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, _, err := tx.LockReservation(ctx, store.Reservation{
			ID: store.ID{Org: "o", Project: "p", Domain: "d", Key: "held"}, OwnerID: "w1",
			HeartbeatInterval: time.Hour, ExpiresAt: now.Add(24 * time.Hour),
		})
		return err
	})
	if err != nil {
		t.Fatalf("populate reservation: %v", err)
	}
}

func containsCode(codes []connect.Code, c connect.Code) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}

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
