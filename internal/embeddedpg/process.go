package embeddedpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// deathSignal is what the kernel sends the postmaster when we die. SIGINT is PostgreSQL's fast
// shutdown: it ends the sessions, rolls back their transactions, writes a checkpoint and exits
// within seconds, leaving a clean cluster for the next Start. SIGTERM (smart shutdown) could wait
// forever on a session we do not own; SIGQUIT (immediate shutdown) skips the checkpoint and makes
// the next start run crash recovery.
const deathSignal = syscall.SIGINT

// process is one run of the postmaster.
type process struct {
	os      *os.Process
	pid     int
	done    chan struct{} // closed once the postmaster has exited and been reaped
	err     error         // its exit status; read only after done is closed
	logDone chan struct{} // closed once its output is fully forwarded
	tail    *lineTail
	stopped atomic.Bool // an exit after Stop is expected; any other is logged as an error
}

// launch starts the postmaster and waits until it accepts connections.
func (s *Server) launch(ctx context.Context) error {
	if err := waitForOldPostmaster(ctx, s.dataDir, s.cfg.Logger); err != nil {
		return err
	}
	started := time.Now()
	p, err := s.spawn()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(ctx, p); err != nil {
		s.stopAfterFailure(ctx)
		return err
	}
	s.starts.Add(1)
	s.cfg.Logger.Info("embedded postgresql started",
		slog.Int("pid", p.pid), slog.String("socket_dir", s.sockDir), slog.Duration("took", time.Since(started)))
	return nil
}

// spawn starts postgres as our child, in its own process group so a terminal's Ctrl-C reaches only
// us and we stop it in order, and with a parent-death signal so it never outlives us.
func (s *Server) spawn() (*process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create pipe for postgres output: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), s.settings()...)
	s.configure(cmd)
	cmd.SysProcAttr.Pdeathsig = deathSignal
	// An *os.File needs no copying goroutine, so Wait never waits on the pipe.
	cmd.Stdout, cmd.Stderr = w, w

	p := &process{done: make(chan struct{}), logDone: make(chan struct{}), tail: &lineTail{}}
	startErr := make(chan error, 1)
	go func() {
		// The kernel sends Pdeathsig when the thread that forked the child exits, not the process
		// (go.dev/issue/27505), and Go ends a thread when a goroutine exits while locked to it. So
		// fork from a locked thread and keep this goroutine, and with it the thread, alive in Wait
		// for the child's whole life. Returning still locked then ends the thread, harmlessly.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		p.os, p.pid = cmd.Process, cmd.Process.Pid
		startErr <- nil
		p.err = cmd.Wait()
		if !p.stopped.Load() {
			s.unexpectedExits.Add(1)
			s.cfg.Logger.Error("embedded postgresql exited unexpectedly",
				slog.Int("pid", p.pid), slog.Any("error", p.err))
		}
		close(p.done)
	}()
	err = <-startErr
	_ = w.Close() // the child holds its own copy
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		defer close(p.logDone)
		defer r.Close()
		forwardLog(r, s.cfg.Logger, p.tail)
	}()
	return p, nil
}

// configure sets what initdb and postgres share: a working directory the server user can enter,
// a clean environment, and that user's identity when we are root.
func (s *Server) configure(cmd *exec.Cmd) {
	cmd.Dir = s.cfg.Dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.acct != nil {
		cmd.SysProcAttr.Credential = s.acct.credential()
	}
}

// command builds a short-lived helper (initdb) that is killed with its children if ctx ends.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	s.configure(cmd)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// childEnv is our environment without the PG* variables (PGDATA, PGPORT...) and locale settings
// that would change what the binaries do; messages are forced to English for forwardLog.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// waitReady polls until postgres accepts a connection on the socket, it exits, or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attempt, s.ConnString("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-p.done:
			select {
			case <-p.logDone:
			case <-time.After(time.Second):
			}
			exit := p.err
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("start postgres: exited during startup: %w; output: %s", exit, p.tail)
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres to accept connections: %w (last attempt: %v; output: %s)", ctx.Err(), err, p.tail)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Stop shuts the cluster down with a fast shutdown (SIGINT) and waits for the postmaster to exit.
// If ctx ends first it escalates to an immediate shutdown (SIGQUIT) and, after 5 more seconds, to
// SIGKILL for the whole process group, and returns an error. Stopping a stopped server is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	// The lock outlives the postmaster, never the other way round; the
	// supervisor must not start it again behind our back.
	s.stopSupervisor()
	defer s.unlockDir()
	return s.stopPostmaster(ctx)
}

// stopPostmaster is Stop without releasing the directory's lock.
func (s *Server) stopPostmaster(ctx context.Context) error {
	p := s.current()
	if p == nil {
		return nil
	}
	p.stopped.Store(true)
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.os.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres (pid %d) to stop: %w", p.pid, err)
	}
	select {
	case <-p.done:
		s.cfg.Logger.Info("embedded postgresql stopped", slog.Int("pid", p.pid))
		return nil
	case <-ctx.Done():
	}
	select {
	case <-p.done: // exited just as ctx ended
		return nil
	default:
	}
	s.cfg.Logger.Warn("embedded postgresql fast shutdown overran, forcing", slog.Int("pid", p.pid))
	_ = p.os.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.pid, syscall.SIGKILL) // the group: orphaned backends too
		<-p.done
	}
	return fmt.Errorf("stop postgres (pid %d): fast shutdown did not finish in time, forced it: %w", p.pid, ctx.Err())
}

// stopAfterFailure stops a postmaster that started but cannot be used, even if ctx has ended.
func (s *Server) stopAfterFailure(ctx context.Context) {
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.stopPostmaster(stopCtx); err != nil {
		s.cfg.Logger.Error("stop embedded postgresql after failed start", slog.Any("error", err))
	}
}

// waitForOldPostmaster waits (bounded) while postmaster.pid names a live postmaster, e.g. one
// still shutting down after the process that started it was killed. A stale pid file left by a
// dead one is fine: postgres replaces it.
func waitForOldPostmaster(ctx context.Context, dataDir string, logger *slog.Logger) error {
	pid := postmasterPid(dataDir)
	if pid <= 0 {
		return nil
	}
	deadline := time.NewTimer(oldPostmasterWait)
	defer deadline.Stop()
	for i := 0; postmasterAlive(pid, dataDir); i++ {
		if i == 0 {
			logger.Info("waiting for previous postgresql to exit", slog.Int("pid", pid))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for previous postgres (pid %d) on %s to exit: %w", pid, dataDir, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("wait for previous postgres (pid %d) on %s to exit: still running after %v; is another instance using this directory?", pid, dataDir, oldPostmasterWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// postmasterPid reads the first line of postmaster.pid; 0 if there is none.
func postmasterPid(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(strings.TrimSpace(string(first)))
	if err != nil {
		return 0
	}
	return pid
}

// postmasterAlive reports whether pid is a running (not zombie) process that is the postmaster
// of dataDir. A postmaster runs in its data directory, which tells it apart from an unrelated
// process that reused the pid.
func postmasterAlive(pid int, dataDir string) bool {
	if !processRunning(pid) {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true // cannot tell; assume it is ours
	}
	want, err := filepath.EvalSymlinks(dataDir)
	return err != nil || cwd == want
}

// processRunning reports whether pid exists and is not a zombie: an orphaned postmaster that has
// exited stays a zombie until its new parent reaps it, which some container inits never do.
func processRunning(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}
