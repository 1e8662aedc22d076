package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

// Limits small enough to cross cheaply; the defaults are the same code.
var smallLimits = []string{"--max-inline-bytes", "1KiB", "--max-request-bytes", "64KiB"}

func TestBadRequestsAreRejectedOverConnectAndGRPC(t *testing.T) {
	t.Parallel()
	srv := startServer(t, smallLimits...)
	uri := func(u string) *cachev1.CachedOutput {
		return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: u}}
	}
	inline := func(n int) *cachev1.CachedOutput {
		return &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Inline{Inline: make([]byte, n)}}
	}
	tooManyLabels := map[string]string{}
	for i := range 65 {
		tooManyLabels[strings.Repeat("l", i+1)] = "v"
	}
	ok := &cachev1.Scope{Org: "o", Project: "p", Domain: "d"}
	tests := []struct {
		name      string
		call      call
		wantCode  connect.Code
		wantField string // named in the message; empty when no field is to blame
	}{
		{"empty org", get(&cachev1.GetRequest{Scope: &cachev1.Scope{Project: "p", Domain: "d"}, Key: "k"}),
			connect.CodeInvalidArgument, "scope.org"},
		{"over-long project", get(&cachev1.GetRequest{Scope: &cachev1.Scope{Org: "o", Project: strings.Repeat("p", 256), Domain: "d"}, Key: "k"}),
			connect.CodeInvalidArgument, "scope.project"},
		{"missing scope", get(&cachev1.GetRequest{Key: "k"}),
			connect.CodeInvalidArgument, "scope"},
		{"empty key", del(&cachev1.DeleteRequest{Scope: ok}),
			connect.CodeInvalidArgument, "key"},
		{"over-long key", get(&cachev1.GetRequest{Scope: ok, Key: strings.Repeat("k", 1025)}),
			connect.CodeInvalidArgument, "key"},
		{"control character in key", get(&cachev1.GetRequest{Scope: ok, Key: "a\x00b"}),
			connect.CodeInvalidArgument, "key"},
		{"missing output", put(&cachev1.PutRequest{Scope: ok, Key: "k"}),
			connect.CodeInvalidArgument, "output"},
		{"empty uri", put(&cachev1.PutRequest{Scope: ok, Key: "k", Output: uri("")}),
			connect.CodeInvalidArgument, "uri"},
		{"too many labels", put(&cachev1.PutRequest{Scope: ok, Key: "k", Output: &cachev1.CachedOutput{
			Value: &cachev1.CachedOutput_Uri{Uri: "s3://x"}, Metadata: &cachev1.Metadata{Labels: tooManyLabels}}}),
			connect.CodeInvalidArgument, "labels"},
		{"inline output over --max-inline-bytes", put(&cachev1.PutRequest{Scope: ok, Key: "k", Output: inline(1025)}),
			connect.CodeInvalidArgument, "inline"},
		{"body over --max-request-bytes", put(&cachev1.PutRequest{Scope: ok, Key: "k", Output: inline(100 << 10)}),
			connect.CodeResourceExhausted, ""},
		{"empty owner_id", reserve(&cachev1.GetOrExtendReservationRequest{Scope: ok, Key: "k"}),
			connect.CodeInvalidArgument, "owner_id"},
		{"over-long owner_id", release(&cachev1.ReleaseReservationRequest{Scope: ok, Key: "k", OwnerId: strings.Repeat("w", 1025)}),
			connect.CodeInvalidArgument, "owner_id"},
		{"zero heartbeat", reserve(&cachev1.GetOrExtendReservationRequest{Scope: ok, Key: "k", OwnerId: "w", HeartbeatInterval: durationpb.New(0)}),
			connect.CodeInvalidArgument, "heartbeat_interval"},
		{"negative heartbeat", reserve(&cachev1.GetOrExtendReservationRequest{Scope: ok, Key: "k", OwnerId: "w", HeartbeatInterval: durationpb.New(-time.Second)}),
			connect.CodeInvalidArgument, "heartbeat_interval"},
		{"zero max_age", put(&cachev1.PutRequest{Scope: ok, Key: "k", Output: uri("s3://x"), MaxAge: durationpb.New(0)}),
			connect.CodeInvalidArgument, "max_age"},
	}
	for _, p := range srv.protocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					err := tt.call(t, p.client)
					wantCode(t, err, tt.wantCode)
					if connectErr := new(connect.Error); tt.wantField != "" && errors.As(err, &connectErr) &&
						!strings.Contains(connectErr.Message(), tt.wantField) {
						t.Errorf("message %q does not name the field %q", connectErr.Message(), tt.wantField)
					}
					putAndGet(t, p.client)
				})
			}
		})
	}
}

// TestBadJSONBodies sends what no generated client would: broken or
// oversized JSON, over plain HTTP as curl does.
func TestBadJSONBodies(t *testing.T) {
	t.Parallel()
	srv := startServer(t, smallLimits...)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON())
	const scopeJSON = `{"org":"o","project":"p","domain":"d"}`
	tests := []struct {
		name     string
		body     string
		wantCode string // "" for success
	}{
		{"malformed JSON", `{"scope":` + scopeJSON + `,"key":`, "invalid_argument"},
		{"not an object", `["k"]`, "invalid_argument"},
		{"wrong field type", `{"scope":` + scopeJSON + `,"key":42}`, "invalid_argument"},
		{"invalid base64 inline", `{"scope":` + scopeJSON + `,"key":"k","output":{"inline":"%%%"}}`, "invalid_argument"},
		{"body over --max-request-bytes", `{"scope":` + scopeJSON + `,"key":"k","output":{"uri":"` + strings.Repeat("x", 70<<10) + `"}}`, "resource_exhausted"},
		{"unknown field ignored", `{"scope":` + scopeJSON + `,"key":"unknown-field","output":{"uri":"s3://x"},"fieldFromTheFuture":{"a":1}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := httpDo(t, http.MethodPost, srv.url+cachev1connect.CacheServicePutProcedure, "application/json", tt.body)
			if tt.wantCode == "" {
				if status != http.StatusOK {
					t.Fatalf("status %d %s, want 200", status, body)
				}
			} else {
				var e struct{ Code, Message string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != tt.wantCode {
					t.Fatalf("response %d %s, want code %s", status, body, tt.wantCode)
				}
				wantSafeMessage(t, e.Message)
			}
			putAndGet(t, client)
		})
	}
}

// call is one RPC of a table; get, put, del, reserve and release make one
// from a request.
type call func(t *testing.T, c cachev1connect.CacheServiceClient) error

func get(req *cachev1.GetRequest) call {
	return func(t *testing.T, c cachev1connect.CacheServiceClient) error {
		_, err := c.Get(callCtx(t), connect.NewRequest(req))
		return err
	}
}

func put(req *cachev1.PutRequest) call {
	return func(t *testing.T, c cachev1connect.CacheServiceClient) error {
		_, err := c.Put(callCtx(t), connect.NewRequest(req))
		return err
	}
}

func del(req *cachev1.DeleteRequest) call {
	return func(t *testing.T, c cachev1connect.CacheServiceClient) error {
		_, err := c.Delete(callCtx(t), connect.NewRequest(req))
		return err
	}
}

func reserve(req *cachev1.GetOrExtendReservationRequest) call {
	return func(t *testing.T, c cachev1connect.CacheServiceClient) error {
		_, err := c.GetOrExtendReservation(callCtx(t), connect.NewRequest(req))
		return err
	}
}

func release(req *cachev1.ReleaseReservationRequest) call {
	return func(t *testing.T, c cachev1connect.CacheServiceClient) error {
		_, err := c.ReleaseReservation(callCtx(t), connect.NewRequest(req))
		return err
	}
}
