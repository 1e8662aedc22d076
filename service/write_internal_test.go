package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	cachev1 "github.com/cacheservice/cacheservice/gen/cacheservice/v1"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/manager"
	"github.com/cacheservice/cacheservice/store"
)

// TestBudgetRefusesReadsNotCommittedWrites exhausts the response budget and
// calls, through real HTTP and Connect, a read and a write: the read is
// refused with resource_exhausted, the write's answer goes out, since
// refusing it after the write committed would report a done write as failed.
func TestBudgetRefusesReadsNotCommittedWrites(t *testing.T) {
	t.Parallel()
	var cuts []Cut
	limits := newResponseLimits(0, 1<<20, func(c Cut) { cuts = append(cuts, c) }, map[string]procedure{
		"/t.T/Read":  {unary: true, budgeted: true},
		"/t.T/Write": {unary: true},
	})
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

// deadlineRecorder is a server's writer that supports write deadlines and
// checks, at every write, the bound deadlineWriter promises: the piece
// started (start, set by the test) at least the timeout before the
// deadline, which is at most timeout*(1+1/8) away, and no more than
// writeChunk bytes were written under one deadline.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	t        *testing.T
	timeout  time.Duration
	start    time.Time
	deadline time.Time
	sets     int
	since    int // bytes written since the last deadline was set
	flushes  int
}

func (r *deadlineRecorder) SetWriteDeadline(d time.Time) error {
	r.deadline, r.since = d, 0
	r.sets++
	return nil
}

func (r *deadlineRecorder) Write(p []byte) (int, error) {
	if got := r.deadline.Sub(r.start); got < r.timeout {
		r.t.Errorf("a piece had %v to complete from its start, want at least the timeout %v", got, r.timeout)
	}
	if got, bound := time.Until(r.deadline), r.timeout+r.timeout/8; got > bound {
		r.t.Errorf("a piece may wait %v, want at most %v", got, bound)
	}
	if r.since += len(p); r.since > writeChunk {
		r.t.Errorf("%d bytes written under one deadline, want at most %d", r.since, writeChunk)
	}
	return r.ResponseRecorder.Write(p)
}

func (r *deadlineRecorder) FlushError() error {
	r.flushes++
	return nil
}

func newDeadlineRecorder(t *testing.T, timeout time.Duration, unary bool) (*deadlineRecorder, *deadlineWriter) {
	rec := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder(), t: t, timeout: timeout}
	limits := newResponseLimits(timeout, 0, nil, nil)
	return rec, &deadlineWriter{ResponseWriter: rec, rc: *http.NewResponseController(rec), limits: limits, unary: unary}
}

func (r *deadlineRecorder) write(w *deadlineWriter, n int) {
	r.t.Helper()
	r.start = time.Now()
	if _, err := w.Write(make([]byte, n)); err != nil {
		r.t.Fatal(err)
	}
}

// TestWriteDeadlinesAreSetOncePerChunkNotPerPiece writes what a unary
// response writes (a small prefix and a message, and flushes) and then a
// large body: under a long timeout, one deadline covers the small pieces and
// a new one is set only per writeChunk bytes, each piece keeping at least
// the timeout from its start.
func TestWriteDeadlinesAreSetOncePerChunkNotPerPiece(t *testing.T) {
	t.Parallel()
	rec, w := newDeadlineRecorder(t, time.Hour, false)
	rec.write(w, 5)
	rec.write(w, 300)
	w.Flush()
	rec.write(w, 10)
	if rec.sets != 1 || rec.flushes != 1 {
		t.Errorf("small pieces and a flush set %d deadlines and flushed %d times, want 1 and 1", rec.sets, rec.flushes)
	}
	rec.write(w, 3*writeChunk)
	// The first deadline covers writeChunk-315 more bytes, then one per chunk.
	if rec.sets != 4 {
		t.Errorf("%d deadlines set after %d bytes, want 4 (one per %d)", rec.sets, 315+3*writeChunk, writeChunk)
	}
}

// TestWriteDeadlinesAreRenewedWhenLessThanTheTimeoutRemains waits, between
// pieces, longer than the slack (timeout/8): the next piece, or flush, must
// get a new deadline, since the old one leaves it less than the timeout.
func TestWriteDeadlinesAreRenewedWhenLessThanTheTimeoutRemains(t *testing.T) {
	t.Parallel()
	const timeout = 8 * time.Millisecond
	rec, w := newDeadlineRecorder(t, timeout, false)
	rec.write(w, 5)
	time.Sleep(2 * timeout / 8)
	rec.write(w, 5)
	if rec.sets != 2 {
		t.Errorf("%d deadlines set, want 2: the second piece started with less than the timeout left", rec.sets)
	}
	time.Sleep(2 * timeout / 8)
	before := time.Now()
	w.Flush()
	if rec.sets != 3 || rec.deadline.Sub(before) < timeout {
		t.Errorf("a flush after the slack: %d deadlines set, %v left, want 3 and at least %v", rec.sets, rec.deadline.Sub(before), timeout)
	}
}

// TestUnaryFlushesAreDropped: a unary response's flushes never reach the
// server's writer, a stream's all do.
func TestUnaryFlushesAreDropped(t *testing.T) {
	t.Parallel()
	for _, unary := range []bool{true, false} {
		rec, w := newDeadlineRecorder(t, time.Hour, unary)
		rec.write(w, 5)
		w.Flush()
		if err := w.FlushError(); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 0, false: 2}[unary]; rec.flushes != want {
			t.Errorf("unary %v: %d flushes reached the writer, want %d", unary, rec.flushes, want)
		}
	}
}

// TestEdgeProceduresAgreeWithTheHandlers calls every mounted procedure
// through the edge and compares what its Connect handler declares (stream
// type, idempotency) with the edge's table: a read the table missed would
// escape the response budget, a stream it called unary would lose its
// flushes.
func TestEdgeProceduresAgreeWithTheHandlers(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.Context(), store.Config{URL: pgtest.NewDatabase(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	var mu sync.Mutex
	specs := map[string]connect.Spec{}
	record := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			mu.Lock()
			specs[req.Spec().Procedure] = req.Spec()
			mu.Unlock()
			return next(ctx, req)
		}
	})
	srv := httptest.NewServer(NewEdge(manager.New(st, manager.Config{}, nil), Options{Interceptors: []connect.Interceptor{record}}))
	t.Cleanup(srv.Close)
	for _, path := range Procedures() {
		res, err := srv.Client().Post(srv.URL+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		res.Body.Close()
	}
	table := edgeProcedures()
	mu.Lock()
	defer mu.Unlock()
	if len(specs) != len(Procedures()) {
		t.Errorf("the interceptor saw %d procedures, want all %d", len(specs), len(Procedures()))
	}
	for path, spec := range specs {
		want := procedure{
			unary:    spec.StreamType == connect.StreamTypeUnary,
			budgeted: spec.IdempotencyLevel == connect.IdempotencyNoSideEffects,
		}
		if got := table[path]; got != want {
			t.Errorf("%s: the edge's table says %+v, its handler %+v", path, got, want)
		}
	}
	if !table[cachev1connect.CacheServiceGetProcedure].budgeted || table[cachev1connect.CacheServicePutProcedure].budgeted {
		t.Errorf("Get budgeted %v, Put budgeted %v: want the read only", table[cachev1connect.CacheServiceGetProcedure].budgeted,
			table[cachev1connect.CacheServicePutProcedure].budgeted)
	}
}
