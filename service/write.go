package service

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// DefaultWriteTimeout is how long one piece of a response may wait for the
// client to take it when Options leaves WriteTimeout unset.
const DefaultWriteTimeout = 10 * time.Second

// DefaultResponseBudget is the bytes of responses the edge holds at once
// while they are written, when Options leaves ResponseBudget unset: 64
// inline outputs of the default 1 MiB limit.
const DefaultResponseBudget = 64 << 20

// writeChunk is the piece of a response that one write deadline covers: a
// client must take this much per WriteTimeout, whatever the response's size,
// so a large response to a slow but reading client is not cut.
const writeChunk = 64 << 10

// Cut says why the edge cut a response short, for Options.OnCut.
type Cut string

const (
	// CutWriteTimeout: the client took no piece of the response within the
	// write timeout (a stalled reader, an HTTP/2 window it never opens). The
	// HTTP/2 stream is reset; an HTTP/1.1 connection is closed.
	CutWriteTimeout Cut = "write_timeout"
	// CutBudget: the response did not fit in the response budget and was
	// answered resource_exhausted instead.
	CutBudget Cut = "budget"
)

// Cuts lists every Cut, for metrics that want their series from the start.
func Cuts() []Cut { return []Cut{CutWriteTimeout, CutBudget} }

// responseLimits bounds what slow readers can hold: how long a response
// write may wait (per piece), and how many bytes of responses are held
// while being written. Without them a client that never reads (an HTTP/2
// window of zero) pins every response it asks for, for as long as its
// connection stays open.
type responseLimits struct {
	timeout time.Duration
	budget  budget
	onCut   func(Cut)
}

func newResponseLimits(timeout time.Duration, budgetBytes int64, onCut func(Cut)) *responseLimits {
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	if budgetBytes <= 0 {
		budgetBytes = DefaultResponseBudget
	}
	if onCut == nil {
		onCut = func(Cut) {}
	}
	return &responseLimits{timeout: timeout, budget: budget{limit: budgetBytes}, onCut: onCut}
}

// budget is a count of response bytes held, bounded by limit.
type budget struct {
	mu    sync.Mutex
	limit int64
	held  int64
}

// tryAcquire takes n bytes if they fit. A response larger than the whole
// budget fits when nothing else is held, so that no entry the server
// accepted becomes unreadable.
func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held > 0 && b.held+n > b.limit {
		return false
	}
	b.held += n
	return true
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.held -= n
	b.mu.Unlock()
}

// hold is the part of the budget one request holds: taken by the
// interceptor once the response message is known, given back by the HTTP
// wrapper once the response is written or cut.
type hold struct{ bytes int64 }

type holdKey struct{}

// handler wraps h so that every response write has a deadline and the
// request's share of the budget is released when its response is done.
func (l *responseLimits) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held := &hold{}
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), limits: l}
		defer func() { l.budget.release(held.bytes) }()
		// What the handler leaves buffered, net/http sends after it returns
		// under the last deadline set, which it clears only then.
		h.ServeHTTP(dw, r.WithContext(context.WithValue(r.Context(), holdKey{}, held)))
	})
}

// interceptor takes the response's size from the budget before Connect
// marshals and writes it, and answers resource_exhausted when it does not
// fit: refusing at once, rather than waiting, frees the message now, so
// that past the budget memory does not grow with the number of slow
// readers. Errors are small and always go out.
//
// Only reads (NO_SIDE_EFFECTS, the Gets that carry outputs) are held to the
// budget: a write's response is a few bytes, and refusing it after the
// write committed would tell the caller a stored Put, a granted reservation
// or a done Delete had failed, and its retry would then get another answer.
func (l *responseLimits) interceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			held, _ := ctx.Value(holdKey{}).(*hold)
			if err != nil || res == nil || held == nil || req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects {
				return res, err
			}
			msg, ok := res.Any().(proto.Message)
			if !ok {
				return res, err
			}
			n := int64(proto.Size(msg))
			if !l.budget.tryAcquire(n) {
				l.onCut(CutBudget)
				return nil, connect.NewError(connect.CodeResourceExhausted,
					errors.New("server is busy sending other responses; retry shortly"))
			}
			held.bytes += n
			return res, nil
		}
	}
}

// deadlineWriter gives every piece of a response (writeChunk bytes, and
// each flush) its own write deadline, so a response waits at most the
// timeout for a client that takes nothing, yet a long wait before the first
// byte (a long poll) is never cut: the deadline starts at the write.
type deadlineWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController // of the wrapped writer
	limits   *responseLimits
	deadline time.Time
	cut      bool // the response missed a deadline: counted once, not written again
}

func (w *deadlineWriter) arm() {
	w.deadline = time.Now().Add(w.limits.timeout)
	// ErrNotSupported (a writer without deadlines, in tests) leaves the
	// write unbounded, as before.
	_ = w.rc.SetWriteDeadline(w.deadline)
}

// failed counts a write error as a cut when the deadline had passed; other
// errors are the client's going away.
func (w *deadlineWriter) failed() {
	if !w.cut && !time.Now().Before(w.deadline) {
		w.cut = true
		w.limits.onCut(CutWriteTimeout)
	}
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), writeChunk)]
		w.arm()
		n, err := w.ResponseWriter.Write(piece)
		written += n
		if err != nil {
			w.failed()
			return written, err
		}
		p = p[len(piece):]
	}
	return written, nil
}

func (w *deadlineWriter) FlushError() error {
	w.arm()
	err := w.rc.Flush()
	if err != nil {
		w.failed()
	}
	return err
}

func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the server's writer (full
// duplex, read deadlines).
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
