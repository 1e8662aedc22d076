// Package gcheadroom lets the heap grow by a fixed number of bytes above
// what is live before the garbage collector runs again.
//
// Go's collector runs when the heap has grown by GOGC percent (100) of what
// the last collection found live. A server whose live heap is small but
// which allocates fast, as one answering many small calls does, then
// collects very often. Raising GOGC would collect less often, but would also
// multiply the heap of a server whose live heap is large. Headroom gives the
// small heap the room and leaves a large one at Go's default: after each
// collection the collector's percent is set so that the next one comes when
// the heap has grown by the headroom, or by GOGC=100 if that is more.
//
// The percent follows the heap one collection behind: the runtime fixes the
// next goal as marking ends, and the tuner runs just after. While the live
// heap grows fast, a goal may briefly give more room than the headroom (the
// percent chosen for the smaller heap before), until the tuner catches up.
// GOMEMLIMIT, which the runtime applies on every allocation, is the hard
// bound.
package gcheadroom

import (
	"errors"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultPercent is the collector's percent when headroom would give less:
// Go's own default, so headroom never makes the collector run more often.
const DefaultPercent = 100

// heapMinimum is the runtime's least heap goal at the default percent; it
// scales with the percent, so a percent above headroom/heapMinimum*100
// would give more room than headroom.
const heapMinimum = 4 << 20

// The collector's goal is the heap marked live, plus the percent of the
// live heap, the goroutine stacks and the globals it scanned.
var baseMetrics = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// Percent is the collector's percent that lets the heap grow by headroom
// bytes above base, the bytes the last collection scanned, before the next
// collection. It is never below DefaultPercent, and never so high that the
// runtime's least heap goal would exceed headroom.
func Percent(headroom, base uint64) int {
	p := headroom * 100 / max(base, 1)
	p = min(p, headroom*100/heapMinimum)
	return int(max(p, DefaultPercent))
}

// Tuner keeps the collector's percent at Percent(headroom, base) after every
// collection, until Stop.
type Tuner struct {
	headroom uint64
	before   int // the percent before Start, restored by Stop

	mu      sync.Mutex
	stopped bool
	set     int // the percent last set
	sample  []metrics.Sample
	cycles  int // tunes after a collection, for tests
}

// running makes the tuner one per process: two would undo each other.
var running atomic.Bool

// ErrRunning is Start's answer while another Tuner has not been stopped.
var ErrRunning = errors.New("gcheadroom: the collector is already tuned by another Tuner")

// Start sets the collector's percent for the heap live now and again after
// each collection. Headroom must be positive.
func Start(headroom uint64) (*Tuner, error) {
	if !running.CompareAndSwap(false, true) {
		return nil, ErrRunning
	}
	t := &Tuner{headroom: headroom}
	for _, name := range baseMetrics {
		t.sample = append(t.sample, metrics.Sample{Name: name})
	}
	t.before = debug.SetGCPercent(DefaultPercent)
	t.tune()
	t.arm()
	return t, nil
}

// Percent is the collector's percent the tuner set last.
func (t *Tuner) Percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set
}

// Stop stops tuning and gives the collector back the percent it had before
// Start.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	debug.SetGCPercent(t.before)
	running.Store(false)
}

// arm asks to be called after the next collection: a cleanup runs once the
// collector has found its object unreachable, and arms the next one.
func (t *Tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *Tuner) {
		if t.tune() {
			t.mu.Lock()
			t.cycles++
			t.mu.Unlock()
			t.arm()
		}
	}, t)
}

// sentinel is allocated only to be collected. It holds a pointer so that it
// is not packed into a shared tiny block, which may outlive it.
type sentinel struct{ _ *byte }

// tune sets the percent for the heap live now; it reports false once the
// tuner is stopped.
func (t *Tuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var base uint64
	for _, s := range t.sample {
		base += s.Value.Uint64()
	}
	p := Percent(t.headroom, base)
	if p != t.set {
		debug.SetGCPercent(p)
		t.set = p
	}
	return true
}
