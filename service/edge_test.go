package service_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/service"
)

func TestProceduresListEveryRPCOfCacheService(t *testing.T) {
	t.Parallel()
	want := []string{
		cachev1connect.CacheServiceGetProcedure,
		cachev1connect.CacheServicePutProcedure,
		cachev1connect.CacheServiceDeleteProcedure,
		cachev1connect.CacheServiceGetOrExtendReservationProcedure,
		cachev1connect.CacheServiceReleaseReservationProcedure,
		// Flyte's cache API, mounted beside ours.
		flytecachev2connect.CacheServiceGetProcedure,
		flytecachev2connect.CacheServicePutProcedure,
		flytecachev2connect.CacheServiceDeleteProcedure,
		flytecachev2connect.CacheServiceGetOrExtendReservationProcedure,
		flytecachev2connect.CacheServiceReleaseReservationProcedure,
	}
	got := service.Procedures()
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("Procedures() = %v, want %s among them", got, p)
		}
	}
}

// TestEdgeServesEveryProcedureBehindTheCallersInterceptors posts an empty
// request to every procedure: each must be mounted (validation answers,
// not a 404), and the caller's interceptor must see it although validation
// rejected it, since it runs outside validation.
func TestEdgeServesEveryProcedureBehindTheCallersInterceptors(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var mu sync.Mutex
	seen := map[string]connect.Code{}
	record := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			mu.Lock()
			defer mu.Unlock()
			seen[req.Spec().Procedure] = connect.CodeOf(err)
			return res, err
		}
	})
	srv := httptest.NewServer(service.NewEdge(manager.New(st, manager.Config{}, nil),
		service.Options{Interceptors: []connect.Interceptor{record}}))
	t.Cleanup(srv.Close)

	for _, procedure := range service.Procedures() {
		res, err := srv.Client().Post(srv.URL+procedure, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatalf("POST %s: %v", procedure, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s with an empty request: status %d, want 400 (invalid_argument)", procedure, res.StatusCode)
		}
		mu.Lock()
		code, ok := seen[procedure]
		mu.Unlock()
		if !ok || code != connect.CodeInvalidArgument {
			t.Errorf("caller's interceptor saw %s: %v (code %v), want invalid_argument", procedure, ok, code)
		}
	}
}

// TestEveryMountedProcedureHasARole fails when a mounted RPC is missing from
// auth's role table: with authentication on it would be refused to
// everyone, and the table is the one place its role must be declared.
func TestEveryMountedProcedureHasARole(t *testing.T) {
	t.Parallel()
	for _, procedure := range service.Procedures() {
		if _, ok := auth.RoleOf(procedure); !ok {
			t.Errorf("%s is mounted but has no role in auth's procedure table (auth/role.go)", procedure)
		}
	}
}

// TestRouteProceduresSendsOnlyTheAPIStraightToTheEdge checks the shortcut
// past the server's ServeMux: each procedure the mux routes to the edge's
// pattern reaches the edge without the mux; one it routes elsewhere, and
// any other path (an unclean or escaped spelling of a procedure included),
// goes through the mux, which redirects or routes it as it always did.
func TestRouteProceduresSendsOnlyTheAPIStraightToTheEdge(t *testing.T) {
	t.Parallel()
	var reached string
	edge := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = "edge" })
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) { reached = "mux" })
	// A route of its own for one procedure: the mux's choice must win.
	mux.HandleFunc(cachev1connect.CacheServiceDeleteProcedure, func(http.ResponseWriter, *http.Request) { reached = "own" })
	h := service.RouteProcedures(mux, "/", edge)
	route := func(path string) (string, int) {
		reached = ""
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		return reached, rec.Code
	}
	for _, p := range service.Procedures() {
		want := "edge"
		if p == cachev1connect.CacheServiceDeleteProcedure {
			want = "own"
		}
		if got, _ := route(p); got != want {
			t.Errorf("%s reached %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"/", "/metrics", "/readyz", "/" + cachev1connect.CacheServiceName + "/Nope",
		"/" + cachev1connect.CacheServiceName + "/Get/", "/" + cachev1connect.CacheServiceName + "%2FGet"} {
		if got, _ := route(p); got != "mux" {
			t.Errorf("%s reached %q, want the mux", p, got)
		}
	}
	// An unclean path is the mux's to redirect, as before the shortcut.
	for _, p := range []string{"/x/.." + cachev1connect.CacheServiceGetProcedure, "/" + cachev1connect.CacheServiceGetProcedure} {
		if got, code := route(p); got != "" || code/100 != 3 {
			t.Errorf("%s reached %q with status %d, want the mux's redirect", p, got, code)
		}
	}
}
