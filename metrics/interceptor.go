package metrics

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
)

// Interceptor returns a Connect interceptor that counts RPCs by procedure and
// code and times them. (Get's hits and misses come from the manager's
// Observer, so every API that reads through the manager counts.) Install it outside the
// validation interceptor so that rejected requests are counted too. Requests
// that fail before a handler runs (a body that does not decode, an unknown
// procedure) never reach interceptors and are not counted.
func (m *Metrics) Interceptor() connect.Interceptor {
	return &interceptor{m: m}
}

type interceptor struct{ m *Metrics }

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		started := time.Now()
		res, err := next(ctx, req)
		i.m.observeRPC(req.Spec().Procedure, started, err)
		return res, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		started := time.Now()
		err := next(ctx, conn)
		i.m.observeRPC(conn.Spec().Procedure, started, err)
		return err
	}
}

func (m *Metrics) observeRPC(procedure string, started time.Time, err error) {
	m.latency.WithLabelValues(procedure).Observe(time.Since(started).Seconds())
	code := codeOf(err)
	m.requests.WithLabelValues(procedure, code).Inc()
}

// codeOf is the Connect code of err as a label: "ok" for success, the
// lowercase code name otherwise (unknown for errors that carry none). A
// bare context error is the client's cancel or deadline, not unknown.
func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code().String()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled.String()
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded.String()
	}
	return connect.CodeUnknown.String()
}
