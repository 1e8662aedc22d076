package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

// reloadHook re-reads one thing on SIGHUP and says, in a few words, what it
// did ("log level debug from /etc/cacheservice/level"). An error leaves the
// old value in force.
type reloadHook struct {
	name string
	fn   func() (string, error)
}

// reloader runs its hooks, in the order added, on every SIGHUP. SIGHUP means
// "reload": it never stops the server. Whatever can be re-read registers a
// hook with add (today the log level; the auth file and certificates later).
type reloader struct {
	mu    sync.Mutex
	hooks []reloadHook
}

// add registers a hook.
func (r *reloader) add(name string, fn func() (string, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hooks = append(r.hooks, reloadHook{name: name, fn: fn})
}

// reload runs every hook and logs one line saying what was reloaded and what
// failed.
func (r *reloader) reload(ctx context.Context, logger *slog.Logger) {
	r.mu.Lock()
	hooks := append([]reloadHook(nil), r.hooks...)
	r.mu.Unlock()
	var done []string
	var errs []error
	for _, h := range hooks {
		what, err := h.fn()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.name, err))
			continue
		}
		done = append(done, what)
	}
	if len(done) == 0 {
		done = append(done, "nothing")
	}
	if err := errors.Join(errs...); err != nil {
		logger.LogAttrs(ctx, visible(ctx, logger, slog.LevelWarn), "SIGHUP: reload failed, keeping the old values",
			slog.String("reloaded", strings.Join(done, "; ")), slog.String("error", oneLine(err)))
		return
	}
	logger.LogAttrs(ctx, visible(ctx, logger, slog.LevelInfo), "SIGHUP: reloaded", slog.String("reloaded", strings.Join(done, "; ")))
}

// visible returns level, raised as far as needed for logger to log it: the
// operator who sent SIGHUP must see its answer, even one that just set the
// level to error.
func visible(ctx context.Context, logger *slog.Logger, level slog.Level) slog.Level {
	for _, l := range []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if l >= level && logger.Enabled(ctx, l) {
			return l
		}
	}
	return slog.LevelError + 4 // above any level a file can set but error+N
}

// watch reloads on every SIGHUP until ctx ends or stop is called. From the
// call on, SIGHUP no longer terminates the process.
func (r *reloader) watch(ctx context.Context, logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.reload(ctx, logger)
			}
		}
	})
	return func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}
}
