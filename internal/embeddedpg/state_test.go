package embeddedpg

import (
	"syscall"
	"testing"
	"time"
)

func TestStateFollowsStopRestartAndCrash(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Dir: initializedDir(t)})
	want := func(step string, want State) {
		t.Helper()
		if got := s.State(); got != want {
			t.Fatalf("%s: State = %+v, want %+v", step, got, want)
		}
	}
	want("after start", State{Running: true, Starts: 1})
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	want("after stop", State{Running: false, Starts: 1})
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	want("after restart", State{Running: true, Starts: 2})

	// An immediate shutdown that we did not ask for stands for a crash.
	if err := syscall.Kill(s.Pid(), syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("postmaster still running 30s after SIGQUIT")
	}
	want("after crash", State{Running: false, Starts: 2, UnexpectedExits: 1})
}
