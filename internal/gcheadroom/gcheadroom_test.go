package gcheadroom

import (
	"errors"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name           string
		headroom, base uint64
		want           int
	}{
		{"small heap gets the headroom", 32 * mib, 8 * mib, 400},
		{"rounded down", 32 * mib, 10 * mib, 320},
		{"large heap keeps Go's default", 32 * mib, 64 * mib, DefaultPercent},
		{"headroom equal to the heap is the default", 32 * mib, 32 * mib, DefaultPercent},
		// The runtime's least goal, 4 MiB at 100 %, scales with the
		// percent: it must not give more than the headroom.
		{"tiny heap capped by the runtime's least goal", 32 * mib, 1 * mib, 800},
		{"nothing collected yet", 32 * mib, 0, 800},
		{"headroom below the least goal", 2 * mib, 0, DefaultPercent},
	}
	for _, tt := range tests {
		if got := Percent(tt.headroom, tt.base); got != tt.want {
			t.Errorf("%s: Percent(%d, %d) = %d, want %d", tt.name, tt.headroom, tt.base, got, tt.want)
		}
	}
}

// runtimePercent is the collector's percent as the runtime has it.
func runtimePercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// room is how far the heap may grow above what the last collection found
// live before the next one.
func room() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// tunedCycles is how many times the tuner ran after a collection.
func (t *Tuner) tunedCycles() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cycles
}

// collectUntil runs collections until ok holds: the tuner runs after a
// collection, on the runtime's cleanup goroutine, so it may take a few.
func collectUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s of collections: %s", what)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// TestTunerFollowsTheLiveHeap holds a large heap and lets it go, and checks
// after collections that the runtime's percent follows: the headroom's worth
// for the test's small heap, Go's default while the large one is live.
func TestTunerFollowsTheLiveHeap(t *testing.T) {
	const headroom = 64 << 20
	before := debug.SetGCPercent(150)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	tuner, err := Start(headroom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tuner.Stop)
	if _, err := Start(headroom); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Start: err = %v, want ErrRunning", err)
	}

	// The test binary's heap is a few MiB: far below the headroom. Two
	// tunes after collections: the second one set the goal the room is
	// read from.
	collectUntil(t, "two tunes after collections, and percent above 800 for a small heap", func() bool {
		return tuner.tunedCycles() >= 2 && runtimePercent() >= 800 && tuner.Percent() == runtimePercent()
	})
	// The room is the headroom: not the default's (a few MiB), and not more
	// (stacks and globals count towards the goal too).
	if r := room(); r > headroom+headroom/16 || r < headroom*3/4 {
		t.Errorf("the heap may grow by %d bytes above what is live, want about the headroom, %d", r, headroom)
	}

	live := make([][]byte, 96)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	collectUntil(t, "percent back to the default with 96 MiB live", func() bool {
		return runtimePercent() == DefaultPercent
	})
	runtime.KeepAlive(live)
	live = nil

	collectUntil(t, "percent up again once the 96 MiB are garbage", func() bool {
		return runtimePercent() >= 800
	})
	runtime.GC() // one more, so that the goal is the new percent's
	if r := room(); r > headroom+headroom/16 || r < headroom*3/4 {
		t.Errorf("after the large heap went, the heap may grow by %d bytes, want about the headroom, %d", r, headroom)
	}

	tuner.Stop()
	if got := runtimePercent(); got != 150 {
		t.Errorf("after Stop the percent is %d, want 150, the one before Start", got)
	}
	// A stopped tuner no longer changes it, and another may start.
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if got := runtimePercent(); got != 150 {
		t.Errorf("a collection after Stop set the percent to %d, want it left at 150", got)
	}
	again, err := Start(headroom)
	if err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	again.Stop()
}
