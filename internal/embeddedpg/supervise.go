package embeddedpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// repairTimeout bounds one repair: a fast shutdown and a start.
const repairTimeout = 2 * time.Minute

// exitGrace is how long a postmaster whose socket is gone is given to exit
// on its own before it is stopped: a crashing one removes its socket first,
// and its exit must count as unexpected, not as our stop.
const exitGrace = time.Second

// socketPath is the unix socket clients connect to.
func (s *Server) socketPath() string {
	return filepath.Join(s.sockDir, fmt.Sprintf(".s.PGSQL.%d", port))
}

// socketPresent reports whether the socket file exists. PostgreSQL does not
// notice its removal (say, by a tmp cleaner): it keeps listening on a socket
// nobody can reach.
func (s *Server) socketPresent() bool {
	fi, err := os.Lstat(s.socketPath())
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// startSupervisor checks every cfg.Supervise whether the cluster can still
// be reached, and repairs it when not: a postmaster that exited unasked, or
// one whose socket file was removed, is (stopped and) started again on the
// same directory, so ConnString stays valid. Stop ends it.
func (s *Server) startSupervisor() {
	if s.cfg.Supervise <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.mu.Lock()
	s.stopSupervising = func() { cancel(); <-done }
	s.mu.Unlock()
	go func() {
		defer close(done)
		tick := time.NewTicker(s.cfg.Supervise)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if reason := s.broken(); reason != "" {
				s.repair(ctx, reason)
			}
		}
	}()
}

// stopSupervisor ends the supervisor, waiting for a repair in progress.
func (s *Server) stopSupervisor() {
	s.mu.Lock()
	stop := s.stopSupervising
	s.stopSupervising = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// broken says why the cluster cannot be reached, or "" if it can.
func (s *Server) broken() string {
	p := s.current()
	if p == nil {
		return ""
	}
	select {
	case <-p.done:
		return "postmaster exited"
	default:
	}
	if !s.socketPresent() {
		return "socket file " + s.socketPath() + " is gone"
	}
	return ""
}

// repair restarts the postmaster; a failure is logged and tried again on the
// next check.
func (s *Server) repair(ctx context.Context, reason string) {
	s.cfg.Logger.Warn("embedded postgresql cannot be reached, restarting it", slog.String("reason", reason))
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	if p := s.current(); p != nil {
		select {
		case <-p.done:
		case <-time.After(exitGrace):
		case <-ctx.Done():
			return
		}
	}
	err := s.stopPostmaster(ctx)
	if err == nil {
		err = s.launch(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.cfg.Logger.Error("restart embedded postgresql", slog.Any("error", err))
	}
}
