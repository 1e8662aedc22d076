package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
)

// TestBudgetRefusesReadsNotCommittedWrites exhausts the response budget and
// calls, through real HTTP and Connect, a read and a write: the read is
// refused with resource_exhausted, the write's answer goes out, since
// refusing it after the write committed would report a done write as failed.
func TestBudgetRefusesReadsNotCommittedWrites(t *testing.T) {
	t.Parallel()
	var cuts []Cut
	limits := newResponseLimits(0, 1<<20, func(c Cut) { cuts = append(cuts, c) })
	if !limits.budget.tryAcquire(1 << 20) { // slow readers hold all of it
		t.Fatal("could not take the whole budget")
	}
	answer := func(context.Context, *connect.Request[cachev1.GetOrExtendReservationRequest]) (*connect.Response[cachev1.GetOrExtendReservationResponse], error) {
		return connect.NewResponse(&cachev1.GetOrExtendReservationResponse{Reservation: &cachev1.Reservation{Key: "k", OwnerId: "me"}}), nil
	}
	interceptors := connect.WithInterceptors(limits.interceptor())
	mux := http.NewServeMux()
	mux.Handle("/t.T/Read", connect.NewUnaryHandler("/t.T/Read", answer, interceptors, connect.WithIdempotency(connect.IdempotencyNoSideEffects)))
	mux.Handle("/t.T/Write", connect.NewUnaryHandler("/t.T/Write", answer, interceptors))
	srv := httptest.NewServer(limits.handler(mux))
	t.Cleanup(srv.Close)

	call := func(procedure string) error {
		client := connect.NewClient[cachev1.GetOrExtendReservationRequest, cachev1.GetOrExtendReservationResponse](srv.Client(), srv.URL+procedure)
		_, err := client.CallUnary(t.Context(), connect.NewRequest(&cachev1.GetOrExtendReservationRequest{}))
		return err
	}
	if err := call("/t.T/Read"); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("a read past the budget: %v, want resource_exhausted", err)
	}
	if err := call("/t.T/Write"); err != nil {
		t.Errorf("a write past the budget: %v, want its answer", err)
	}
	if len(cuts) != 1 || cuts[0] != CutBudget {
		t.Errorf("cuts counted: %v, want one budget cut (the read)", cuts)
	}
}
