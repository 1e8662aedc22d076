package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cacheservice/cacheservice/store"
)

// Bounds of --db-connect-timeout, and the backoff between attempts.
const (
	maxConnectTimeout = time.Hour
	firstRetryDelay   = 250 * time.Millisecond
	maxRetryDelay     = 5 * time.Second
)

// errPermanent marks a connection failure that no retry can cure.
var errPermanent = errors.New("retrying cannot help")

// connectStore opens the pool and pings until the database answers, for at
// most timeout: a pod that starts before its database then waits for it
// instead of crash-looping. Each failed attempt logs one line saying why, in
// words that hold nothing of the connection string. A URL that does not
// parse, a refused authentication (SQLSTATE class 28: wrong password,
// unknown role, no pg_hba.conf entry) and any other answer of the server
// that waiting cannot change (an unknown run-time parameter) fail at once:
// they are the operator's to fix, and retrying would only delay saying so.
// What waiting can cure is retried: no answer at all (refused or timed-out
// connections, unknown hosts, a missing socket), a server starting up or
// shutting down (57P03, 57P01, 57P02), out of connections (class 53), and a
// database not created yet (3D000). Timeout 0 tries once.
func connectStore(ctx context.Context, cfg store.Config, timeout time.Duration, logger *slog.Logger) (*store.Store, error) {
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err) // a bad URL: nothing to retry
	}
	started := time.Now()
	delay := firstRetryDelay
	for attempt := 1; ; attempt++ {
		err := st.Ping(ctx)
		if err == nil {
			if attempt > 1 {
				logger.Info("database reachable", slog.Int("attempts", attempt), slog.Duration("waited", time.Since(started).Round(time.Millisecond)))
			}
			return st, nil
		}
		reason, permanent := connectFailure(err)
		elapsed := time.Since(started)
		if permanent || ctx.Err() != nil || elapsed+delay > timeout {
			st.Close()
			switch {
			case permanent:
				return nil, fmt.Errorf("reach database: %s (%w): %w", reason, errPermanent, err)
			case ctx.Err() != nil:
				return nil, fmt.Errorf("reach database: stopped waiting after %d attempts: %w", attempt, err)
			default:
				return nil, fmt.Errorf("reach database: still unreachable after %d attempts in %v (%s): %w",
					attempt, elapsed.Round(time.Millisecond), opt("db-connect-timeout"), err)
			}
		}
		// Up to a fifth less, so replicas started together spread out.
		wait := delay - time.Duration(rand.Int64N(int64(delay/5)+1))
		logger.Warn("database unreachable, retrying", slog.Int("attempt", attempt), slog.String("reason", reason),
			slog.Duration("retry_in", wait.Round(time.Millisecond)), slog.Duration("gives_up_in", (timeout-elapsed).Round(time.Second)))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// connectFailure says in a few words why a ping failed, from the error's
// type and SQLSTATE, never from its text (which names hosts and users), and
// whether retrying cannot help.
func connectFailure(err error) (reason string, permanent bool) {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		// The server answered. Only these answers can change by waiting;
		// any other (a refused login, an unknown run-time parameter in the
		// URL) will be the same on every attempt.
		code := " (SQLSTATE " + pgErr.Code + ")"
		switch {
		case pgerrcode.IsInvalidAuthorizationSpecification(pgErr.Code):
			return "authentication refused" + code, true
		case pgErr.Code == pgerrcode.CannotConnectNow, pgErr.Code == pgerrcode.AdminShutdown, pgErr.Code == pgerrcode.CrashShutdown:
			return "server starting up or shutting down" + code, false
		case pgErr.Code == pgerrcode.InvalidCatalogName:
			return "database does not exist yet" + code, false
		case pgerrcode.IsInsufficientResources(pgErr.Code):
			return "server out of connections or resources" + code, false
		case pgerrcode.IsConnectionException(pgErr.Code):
			return "connection failed" + code, false
		default:
			return "refused by the server" + code, true
		}
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "host name not resolved", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", false
	case errors.Is(err, syscall.ENOENT):
		return "no server socket", false
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timed out", false
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "network unreachable", false
	default:
		return "connection failed", false
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	netErr, ok := errors.AsType[net.Error](err)
	return ok && netErr.Timeout()
}
