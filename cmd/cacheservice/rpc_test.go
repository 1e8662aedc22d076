package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
)

func TestEntryLifecycleOverConnectAndGRPC(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, p := range srv.protocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c, sc := p.client, scope(t)
			output := &cachev1.CachedOutput{
				Value: &cachev1.CachedOutput_Inline{Inline: []byte("result bytes")},
				Metadata: &cachev1.Metadata{
					Source: &cachev1.Source{Name: "train", Version: "v3"},
					Labels: map[string]string{"team": "ml"},
				},
			}
			get := func() (*connect.Response[cachev1.GetResponse], error) {
				return c.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: sc, Key: "k"}))
			}

			_, err := get()
			wantCode(t, err, connect.CodeNotFound)

			if _, err := c.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: "k", Output: output})); err != nil {
				t.Fatalf("Put: %v", err)
			}
			res, err := get()
			if err != nil {
				t.Fatalf("Get after Put: %v", err)
			}
			got := res.Msg.GetOutput()
			if string(got.GetInline()) != "result bytes" || got.GetMetadata().GetSource().GetVersion() != "v3" ||
				got.GetMetadata().GetLabels()["team"] != "ml" || got.GetMetadata().GetCreatedAt() == nil {
				t.Fatalf("Get = %v, want the stored output with server timestamps", got)
			}

			_, err = c.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: "k", Output: output}))
			wantCode(t, err, connect.CodeAlreadyExists)

			replacement := &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/new"}}
			if _, err := c.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{Scope: sc, Key: "k", Output: replacement, Overwrite: true})); err != nil {
				t.Fatalf("Put with overwrite: %v", err)
			}
			if res, err := get(); err != nil || res.Msg.GetOutput().GetUri() != "s3://bucket/new" {
				t.Fatalf("Get after overwrite = %v, %v; want the new uri", res, err)
			}

			if _, err := c.Delete(callCtx(t), connect.NewRequest(&cachev1.DeleteRequest{Scope: sc, Key: "k"})); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			_, err = get()
			wantCode(t, err, connect.CodeNotFound)
			_, err = c.Delete(callCtx(t), connect.NewRequest(&cachev1.DeleteRequest{Scope: sc, Key: "k"}))
			wantCode(t, err, connect.CodeNotFound)
		})
	}
}

func TestReservationLifecycleOverConnectAndGRPC(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-heartbeat", "10s", "--grace-multiplier", "3")
	for _, p := range srv.protocols(t) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c, sc := p.client, scope(t)
			reserve := func(owner string, heartbeat *durationpb.Duration) *cachev1.Reservation {
				t.Helper()
				res, err := c.GetOrExtendReservation(callCtx(t), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{
					Scope: sc, Key: "k", OwnerId: owner, HeartbeatInterval: heartbeat,
				}))
				if err != nil {
					t.Fatalf("GetOrExtendReservation(%s): %v", owner, err)
				}
				return res.Msg.GetReservation()
			}
			release := func(owner string) {
				t.Helper()
				if _, err := c.ReleaseReservation(callCtx(t), connect.NewRequest(&cachev1.ReleaseReservationRequest{
					Scope: sc, Key: "k", OwnerId: owner,
				})); err != nil {
					t.Fatalf("ReleaseReservation(%s): %v", owner, err)
				}
			}

			before := time.Now()
			claimed := reserve("worker-a", durationpb.New(500*time.Millisecond))
			if claimed.GetOwnerId() != "worker-a" || claimed.GetKey() != "k" {
				t.Fatalf("first claim = %v, want worker-a to own k", claimed)
			}
			if got := claimed.GetHeartbeatInterval().AsDuration(); got != 500*time.Millisecond {
				t.Errorf("heartbeat = %v, want the requested 500ms kept exactly", got)
			}
			if exp := claimed.GetExpiresAt().AsTime(); exp.Before(before.Truncate(time.Microsecond).Add(1500*time.Millisecond)) || exp.After(time.Now().Add(1500*time.Millisecond)) {
				t.Errorf("expires_at = %v, want about now + 3 x 500ms", exp)
			}

			if held := reserve("worker-b", nil); held.GetOwnerId() != "worker-a" || !proto.Equal(held.GetExpiresAt(), claimed.GetExpiresAt()) {
				t.Fatalf("claim by another owner = %v, want worker-a's reservation unchanged", held)
			}
			if extended := reserve("worker-a", nil); extended.GetOwnerId() != "worker-a" || extended.GetHeartbeatInterval().AsDuration() != 10*time.Second {
				t.Fatalf("extension = %v, want worker-a with the 10s maximum heartbeat", extended)
			}

			release("worker-b") // not the owner: succeeds, changes nothing
			if held := reserve("worker-b", nil); held.GetOwnerId() != "worker-a" {
				t.Fatalf("after a release by a non-owner, owner = %q, want worker-a", held.GetOwnerId())
			}
			release("worker-a")
			if taken := reserve("worker-b", nil); taken.GetOwnerId() != "worker-b" {
				t.Fatalf("after release, owner = %q, want worker-b", taken.GetOwnerId())
			}
			release("worker-b")
			release("worker-b") // releasing a missing reservation succeeds too
		})
	}
}

func TestGRPCWebCall(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithGRPCWeb())
	putAndGet(t, client)
	_, err := client.Get(callCtx(t), connect.NewRequest(&cachev1.GetRequest{Scope: scope(t), Key: "missing"}))
	wantCode(t, err, connect.CodeNotFound)
}

// TestGetOverHTTPGet calls Get the way a browser or curl can: the request
// is in the query string.
func TestGetOverHTTPGet(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	client := cachev1connect.NewCacheServiceClient(http1Client(t), srv.url, connect.WithProtoJSON())
	sc := scope(t)
	if _, err := client.Put(callCtx(t), connect.NewRequest(&cachev1.PutRequest{
		Scope: sc, Key: "k", Output: &cachev1.CachedOutput{Value: &cachev1.CachedOutput_Uri{Uri: "s3://bucket/k"}},
	})); err != nil {
		t.Fatalf("Put: %v", err)
	}
	getURL := func(key string) string {
		msg := `{"scope":{"org":"` + sc.Org + `","project":"` + sc.Project + `","domain":"` + sc.Domain + `"},"key":"` + key + `"}`
		return srv.url + cachev1connect.CacheServiceGetProcedure + "?encoding=json&message=" + url.QueryEscape(msg)
	}
	tests := []struct {
		name       string
		key        string
		wantStatus int
		wantBody   string
	}{
		{"hit", "k", http.StatusOK, `"uri":"s3://bucket/k"`},
		{"miss", "missing", http.StatusNotFound, `"code":"not_found"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := httpDo(t, http.MethodGet, getURL(tt.key), "", "")
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("GET = %d %s, want %d with %s", status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// TestPlainJSONPost calls the API as curl does: a JSON body, no client
// library.
func TestPlainJSONPost(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	sc := `{"org":"o","project":"` + t.Name() + `","domain":"d"}`
	status, body := httpDo(t, http.MethodPost, srv.url+cachev1connect.CacheServicePutProcedure, "application/json",
		`{"scope":`+sc+`,"key":"k","output":{"inline":"aGVsbG8="}}`)
	if status != http.StatusOK || body != "{}" {
		t.Fatalf("Put = %d %s, want 200 {}", status, body)
	}
	status, body = httpDo(t, http.MethodPost, srv.url+cachev1connect.CacheServiceGetProcedure, "application/json",
		`{"scope":`+sc+`,"key":"k"}`)
	var res struct {
		Output struct {
			Inline string `json:"inline"`
		} `json:"output"`
	}
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusOK || err != nil || res.Output.Inline != "aGVsbG8=" {
		t.Fatalf("Get = %d %s, want 200 with the inline bytes", status, body)
	}
}

// httpDo makes one plain HTTP/1.1 request and returns the status and body.
func httpDo(t *testing.T, method, target, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(callCtx(t), method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http1Client(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return res.StatusCode, string(b)
}
