package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Workload names.
const (
	GetHit         = "get-hit"
	GetMiss        = "get-miss"
	Put            = "put"
	Claim          = "claim"
	ClaimContended = "claim-contended"
	Lifecycle      = "lifecycle"
	Mixed          = "mixed"
)

// Workloads lists every workload, in the order reports show them.
var Workloads = []string{GetHit, GetMiss, Put, Claim, ClaimContended, Lifecycle, Mixed}

// DefaultMix is mixed's default: mostly task starts that hit, some misses
// that claim, and the Puts that follow.
const DefaultMix = "get-hit=70,get-miss=10,claim=10,put=10"

// lifecycleGets is how many Gets of a finished key each lifecycle flow makes,
// standing in for the other workers that were waiting for the output.
const lifecycleGets = 2

// RPCsPerOp says how many RPCs one operation of a workload makes: one,
// except for lifecycle, whose operation is a whole task's flow.
func RPCsPerOp(workload string) int {
	if workload == Lifecycle {
		return 4 + lifecycleGets
	}
	return 1
}

// cell is what a workload's operations share within one measured run.
type cell struct {
	Config
	driver  Driver
	prefix  string   // unique to the run, so runs never see each other's keys
	payload []byte   // the inline output every Put writes
	mix     []string // mixed: one workload name per percent

	holdersMu sync.Mutex
	holders   map[string]bool // claim-contended: every holder seen
}

// worker is one client: it has its own random source and key sequence.
type worker struct {
	id  int
	seq int
	rng *rand.Rand
	buf []byte
}

// key returns prefix-kind-worker-seq, unique within the run.
func (w *worker) key(c *cell, kind string) string {
	w.seq++
	w.buf = append(w.buf[:0], c.prefix...)
	w.buf = append(w.buf, kind...)
	w.buf = append(w.buf, '-')
	w.buf = strconv.AppendInt(w.buf, int64(w.id), 10)
	w.buf = append(w.buf, '-')
	w.buf = strconv.AppendInt(w.buf, int64(w.seq), 10)
	return string(w.buf)
}

// owner names the worker as a reservation owner.
func (w *worker) owner() string { return "owner-" + strconv.Itoa(w.id) }

// hitKey is the name of preloaded key i; get-hit reads them.
func hitKey(i int) string { return "hit-" + strconv.Itoa(i) }

// op runs one operation of workload and returns "" or the error code.
func (c *cell) op(ctx context.Context, w *worker, workload string) string {
	switch workload {
	case GetHit:
		return codeOf(c.driver.Get(ctx, hitKey(w.rng.IntN(c.KeySpace))))
	case GetMiss:
		err := c.driver.Get(ctx, w.key(c, "miss"))
		if err == nil {
			return "unexpected_hit"
		}
		if code := codeOf(err); code != "not_found" {
			return code
		}
		return ""
	case Put:
		return codeOf(c.driver.Put(ctx, "put-"+strconv.Itoa(w.rng.IntN(c.KeySpace)), c.payload, true))
	case Claim:
		owner := w.owner()
		holder, err := c.driver.Claim(ctx, w.key(c, "claim"), owner)
		if err != nil {
			return codeOf(err)
		}
		if holder != owner {
			return "not_owner"
		}
		return ""
	case ClaimContended:
		holder, err := c.driver.Claim(ctx, c.prefix+"contended", w.owner())
		if err != nil {
			return codeOf(err)
		}
		c.holdersMu.Lock()
		c.holders[holder] = true
		c.holdersMu.Unlock()
		return ""
	case Lifecycle:
		return c.lifecycle(ctx, w)
	case Mixed:
		return c.op(ctx, w, c.mix[w.rng.IntN(len(c.mix))])
	}
	return "unknown_workload"
}

// lifecycle is one task's flow: a Get that misses, a claim that owns, the
// Put of the output, the release, and the Gets of the workers that waited.
func (c *cell) lifecycle(ctx context.Context, w *worker) string {
	key, owner := w.key(c, "task"), w.owner()
	if err := c.driver.Get(ctx, key); codeOf(err) != "not_found" {
		return "get_before_put:" + orOK(codeOf(err))
	}
	holder, err := c.driver.Claim(ctx, key, owner)
	if err != nil {
		return codeOf(err)
	}
	if holder != owner {
		return "not_owner"
	}
	if err := c.driver.Put(ctx, key, c.payload, false); err != nil {
		return codeOf(err)
	}
	if err := c.driver.Release(ctx, key, owner); err != nil {
		return codeOf(err)
	}
	for range lifecycleGets {
		if err := c.driver.Get(ctx, key); err != nil {
			return codeOf(err)
		}
	}
	return ""
}

func orOK(code string) string {
	if code == "" {
		return "ok"
	}
	return code
}

// parseMix turns "get-hit=70,put=30" into one workload name per percent.
func parseMix(spec string) ([]string, error) {
	var mix []string
	for part := range strings.SplitSeq(spec, ",") {
		name, weight, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(weight)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("mix %q: want name=percent, comma-separated", part)
		}
		if name == Mixed || !slices.Contains(Workloads, name) {
			return nil, fmt.Errorf("mix %q: unknown workload %q", part, name)
		}
		for range n {
			mix = append(mix, name)
		}
	}
	if len(mix) == 0 {
		return nil, fmt.Errorf("mix %q: weights add up to zero", spec)
	}
	return mix, nil
}

// preload writes the keys get-hit reads, with concurrency writers.
func preload(ctx context.Context, d Driver, keySpace, concurrency int, payload []byte) error {
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for w := range concurrency {
		wg.Go(func() {
			for i := w; i < keySpace; i += concurrency {
				if err := d.Put(ctx, hitKey(i), payload, true); err != nil {
					errs <- fmt.Errorf("preload %s: %w", hitKey(i), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
