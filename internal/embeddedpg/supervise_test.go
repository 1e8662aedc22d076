package embeddedpg

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// waitUntil polls cond (bounded) and fails with what when it never holds.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}

func TestStateNotRunningWithoutSocket(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Dir: initializedDir(t)})
	if err := os.Remove(s.socketPath()); err != nil {
		t.Fatal(err)
	}
	if st := s.State(); st.Running {
		t.Errorf("State = %+v with the socket gone: clients cannot connect, so it is not running", st)
	}
	if err := ping(t, s); err == nil {
		t.Fatal("connected with the socket gone")
	}
}

func TestSupervisorRepairsRemovedSocketAndCrash(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Dir: initializedDir(t), Supervise: 50 * time.Millisecond})
	if err := os.Remove(s.socketPath()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "restart after the socket was removed", func() bool { return s.State().Starts == 2 })
	if err := ping(t, s); err != nil {
		t.Fatalf("after the repair: %v", err)
	}
	if st := s.State(); st != (State{Running: true, Starts: 2}) {
		t.Errorf("after repairing the socket: State = %+v", st)
	}

	// An immediate shutdown that we did not ask for stands for a crash.
	if err := syscall.Kill(s.Pid(), syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "restart after a crash", func() bool { return s.State().Starts == 3 })
	if err := ping(t, s); err != nil {
		t.Fatalf("after the crash repair: %v", err)
	}
	if st := s.State(); st != (State{Running: true, Starts: 3, UnexpectedExits: 1}) {
		t.Errorf("after repairing a crash: State = %+v", st)
	}

	// Stop is obeyed: the supervisor does not start it again.
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // four supervisor periods
	if st := s.State(); st.Running || st.Starts != 3 {
		t.Errorf("after Stop: State = %+v, want stopped and not restarted", st)
	}
}
