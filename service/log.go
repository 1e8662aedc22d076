package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// logFailures is a Connect interceptor that logs one line per failed RPC:
// its procedure, code and duration. It never logs the request, which may
// hold large or private outputs, and the error's message is the one the
// client saw, which the manager keeps free of SQL and connection details.
func logFailures(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			res, err := next(ctx, req)
			if err != nil {
				code := connect.CodeOf(err)
				msg := err.Error()
				if connectErr := new(connect.Error); errors.As(err, &connectErr) {
					msg = connectErr.Message()
				}
				logger.LogAttrs(ctx, levelOf(code), "request failed",
					slog.String("procedure", req.Spec().Procedure),
					slog.String("protocol", req.Peer().Protocol),
					slog.String("code", code.String()),
					slog.Duration("duration", time.Since(start)),
					slog.String("error", msg),
				)
			}
			return res, err
		}
	}
}

// levelOf ranks a failure by whose problem it is. A miss or a lost Put race
// is how the cache protocol works, not a fault: debug. Bad requests are the
// client's: info. The rest means the server or its database is in trouble.
func levelOf(code connect.Code) slog.Level {
	switch code {
	case connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeCanceled:
		return slog.LevelDebug
	case connect.CodeInvalidArgument, connect.CodeResourceExhausted, connect.CodeFailedPrecondition,
		connect.CodeOutOfRange, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return slog.LevelInfo
	default:
		return slog.LevelWarn
	}
}

// clientGone gives a call whose client went away (a reset HTTP/2 stream, a
// closed connection, a passed deadline) the code that says so. Connect
// itself returns the bare context error when the request was cancelled
// before the handler ran, which would be counted and logged as unknown,
// that is, as the server's trouble.
func clientGone() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			if err == nil || connect.CodeOf(err) != connect.CodeUnknown || ctx.Err() == nil {
				return res, err
			}
			code := connect.CodeCanceled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				code = connect.CodeDeadlineExceeded
			}
			return nil, connect.NewError(code, errors.New("request ended before the server answered"))
		}
	}
}
