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
	// procedures tells, by URL path, which responses are unary and which
	// are held to the budget; a path it lacks is neither.
	procedures map[string]procedure
}

// procedure is what the response writer needs to know of one RPC.
type procedure struct {
	// unary: one response message, after which the handler returns and
	// net/http sends what is buffered (data and trailers) by itself, so
	// explicit flushes only cost a write of their own.
	unary bool
	// budgeted: a read (NO_SIDE_EFFECTS) whose response is held to the
	// budget; only these need a hold in their request's context.
	budgeted bool
}

func newResponseLimits(timeout time.Duration, budgetBytes int64, onCut func(Cut), procedures map[string]procedure) *responseLimits {
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	if budgetBytes <= 0 {
		budgetBytes = DefaultResponseBudget
	}
	if onCut == nil {
		onCut = func(Cut) {}
	}
	return &responseLimits{timeout: timeout, budget: budget{limit: budgetBytes}, onCut: onCut, procedures: procedures}
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

// holdKey is the context key of a budgeted request's *deadlineWriter,
// where the interceptor records the bytes it took from the budget and the
// HTTP wrapper gives them back once the response is written or cut.
type holdKey struct{}

// handler wraps h so that every response write has a deadline and the
// request's share of the budget is released when its response is done.
// What the handler leaves buffered, net/http sends after it returns under
// the last deadline set, which it clears only then.
//
// Only a budgeted procedure's request is copied to carry its hold: the
// copy (a Request and a context) is most of what this layer allocates, and
// the interceptor has nothing to record for the others.
func (l *responseLimits) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := l.procedures[r.URL.Path]
		dw := &deadlineWriter{ResponseWriter: w, rc: *http.NewResponseController(w), limits: l, unary: p.unary}
		if !p.budgeted {
			h.ServeHTTP(dw, r)
			return
		}
		defer func() {
			if later, ok := w.(sentLater); ok && dw.held > 0 {
				held := dw.held
				later.releaseWhenWritten(func() { l.budget.release(held) })
				return
			}
			l.budget.release(dw.held)
		}()
		h.ServeHTTP(dw, r.WithContext(context.WithValue(r.Context(), holdKey{}, dw)))
	})
}

// sentLater is a ResponseWriter whose response leaves after the handler
// returns, queued (grpc-go's, through the bridge): the budget's hold is
// given back once it has left, not when the handler returns.
type sentLater interface {
	releaseWhenWritten(release func())
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
			if err != nil || res == nil || req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects {
				return res, err
			}
			held, _ := ctx.Value(holdKey{}).(*deadlineWriter)
			if held == nil {
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
			held.held += n
			return res, nil
		}
	}
}

// deadlineWriter gives every piece of a response (up to writeChunk bytes,
// and each flush) a write deadline at least the timeout after the piece
// starts, so a response waits about the timeout for a client that takes
// nothing, yet a long wait before the first byte (a long poll) is never
// cut: the deadline starts at the write.
//
// Setting a deadline is not free (on HTTP/2 a message to the connection's
// goroutine and a timer), and a unary response writes two or three pieces
// within microseconds. So a deadline is set with slack, timeout + timeout/8
// from now, and a piece reuses it while at least the timeout remains and
// fewer than writeChunk bytes were written under it: every piece still has
// at least the timeout to complete from when it starts, and waits at most
// timeout*(1+1/8).
//
// A unary response's flushes are dropped: net/http sends what is buffered
// (data and trailers, in one write) when the handler returns, under the
// deadline of the last piece. Only its buffer's worth is still unsent then
// (4 KiB on HTTP/2, a few on HTTP/1.1; larger writes went through the
// pieces), which a stalled client cannot pin past that deadline either
// (the stream is reset, the connection closed). That tail is no longer
// held in the budget, which is given back when the handler returns, and
// when it misses the deadline it is not counted as a cut: it fails after
// the handler returned.
type deadlineWriter struct {
	http.ResponseWriter
	rc       http.ResponseController // of the wrapped writer
	limits   *responseLimits
	unary    bool      // flushes are dropped (see above)
	deadline time.Time // the deadline last set; zero before the first piece
	left     int       // bytes the deadline may still cover
	cut      bool      // the response missed a deadline: counted once, not written again
	held     int64     // bytes of the budget this response holds (budgeted only)
}

// ready sets a new deadline unless the one set leaves a piece starting now
// at least the timeout, and (for bytes) still covers some bytes.
func (w *deadlineWriter) ready(bytes bool) {
	now := time.Now()
	if w.deadline.Sub(now) >= w.limits.timeout && (!bytes || w.left > 0) {
		return
	}
	w.deadline = now.Add(w.limits.timeout + w.limits.timeout/8)
	w.left = writeChunk
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
		w.ready(true)
		piece := p[:min(len(p), w.left)]
		n, err := w.ResponseWriter.Write(piece)
		written += n
		w.left -= n
		if err != nil {
			w.failed()
			return written, err
		}
		p = p[len(piece):]
	}
	return written, nil
}

func (w *deadlineWriter) FlushError() error {
	if w.unary {
		return nil
	}
	w.ready(false)
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
