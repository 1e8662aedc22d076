// Package bench generates load on the cache service and measures it: the
// workloads, the drivers that run them over each protocol or directly on
// the database (the ceiling), and the statistics of a run. It knows nothing
// of how the server under test was started; cmd/cachebench does that.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one measured run: a workload, over one driver, at one
// concurrency.
type Config struct {
	Workload    string
	Protocol    string // a label for the result; the driver does the talking
	Concurrency int
	// Duration bounds the measured phase; Count, when set, ends it sooner
	// after that many operations. One of them must be set.
	Duration time.Duration
	Count    int
	// Warmup runs the workload unmeasured first, so that connections are
	// open and statements prepared.
	Warmup time.Duration
	// KeySpace is how many keys get-hit and put spread over.
	KeySpace int
	// Payload is the size of the inline output each Put writes.
	Payload int
	// Mix weighs the workloads of mixed, as in DefaultMix.
	Mix string
	// OpTimeout bounds each operation; default 10s.
	OpTimeout time.Duration
	// Progress, when set, receives a line each second while the run goes.
	Progress io.Writer
}

// Result is what a run measured. Latencies are in milliseconds.
type Result struct {
	Workload    string           `json:"workload"`
	Protocol    string           `json:"protocol"`
	Concurrency int              `json:"concurrency"`
	Ops         int64            `json:"ops"`
	Seconds     float64          `json:"seconds"`
	OpsPerSec   float64          `json:"ops_per_sec"`
	RPCsPerOp   int              `json:"rpcs_per_op"`
	P50         float64          `json:"p50_ms"`
	P90         float64          `json:"p90_ms"`
	P99         float64          `json:"p99_ms"`
	Max         float64          `json:"max_ms"`
	Errors      map[string]int64 `json:"errors,omitempty"`
	// AllOps counts the warmup's operations too, to share out CPU time
	// measured around the whole run.
	AllOps int64 `json:"all_ops"`
	// Owners is how many different holders claim-contended saw; one is right.
	Owners int `json:"owners,omitempty"`
	// ServerRSSMiB is the server's peak resident memory during the run,
	// when the caller could see the server process.
	ServerRSSMiB float64 `json:"server_rss_mib,omitempty"`
	// CPU time per operation, in microseconds, of each process involved, when
	// the caller could see it: CPU is what a shared machine runs out of, and
	// it is far less noisy than throughput.
	ClientCPU float64 `json:"client_cpu_us_per_op,omitempty"`
	ServerCPU float64 `json:"server_cpu_us_per_op,omitempty"`
	DBCPU     float64 `json:"db_cpu_us_per_op,omitempty"`
}

// ErrorCount is the total of Errors.
func (r Result) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// maxOpsPerWorker bounds a worker's loop whatever the duration says.
const maxOpsPerWorker = 5_000_000

// Bench runs workloads one after another, giving each run its own keys and
// preloading the keys get-hit reads once.
type Bench struct {
	runID  string
	runs   int
	loaded map[loaded]bool // what was already written
}

// loaded names a preload: a key space of payload-sized outputs, through
// Flyte's API or ours.
type loaded struct {
	keySpace, payload int
	flyte             bool
}

// New returns a Bench whose keys differ from any earlier Bench's.
func New() *Bench {
	return &Bench{runID: strconv.FormatInt(time.Now().UnixNano(), 36), loaded: map[loaded]bool{}}
}

// Prepare writes what cfg's workload reads (the keys of get-hit), once per
// key space and payload size. Run calls it too; call it first to keep the
// writing out of measurements taken around Run.
func (b *Bench) Prepare(ctx context.Context, d Driver, cfg Config) error {
	c, err := b.newCell(d, cfg)
	if err != nil {
		return err
	}
	// Flyte's API writes where the others do not (see flyteIdentifier).
	done := loaded{keySpace: c.KeySpace, payload: c.Payload, flyte: c.Protocol == Flyte}
	if b.loaded[done] || !(c.Workload == GetHit || slices.Contains(c.mix, GetHit)) {
		return nil
	}
	if err := preload(ctx, d, c.KeySpace, min(c.Concurrency, 16)+1, c.payload); err != nil {
		return err
	}
	b.loaded[done] = true
	return nil
}

// Run measures cfg.Workload on d.
func (b *Bench) Run(ctx context.Context, d Driver, cfg Config) (Result, error) {
	if err := b.Prepare(ctx, d, cfg); err != nil {
		return Result{}, err
	}
	c, err := b.newCell(d, cfg)
	if err != nil {
		return Result{}, err
	}
	b.runs++
	c.prefix = fmt.Sprintf("%s-%d-", b.runID, b.runs)
	return c.measure(ctx)
}

func (b *Bench) newCell(d Driver, cfg Config) (*cell, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	c := &cell{Config: cfg, driver: d, payload: make([]byte, cfg.Payload), holders: map[string]bool{}}
	for i := range c.payload {
		c.payload[i] = byte('a' + i%26)
	}
	if cfg.Workload == Mixed {
		mix, err := parseMix(cfg.Mix)
		if err != nil {
			return nil, err
		}
		c.mix = mix
	}
	return c, nil
}

func (cfg *Config) normalize() error {
	if !slices.Contains(Workloads, cfg.Workload) {
		return fmt.Errorf("unknown workload %q", cfg.Workload)
	}
	if cfg.Concurrency < 1 {
		return errors.New("concurrency must be at least 1")
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 {
		return errors.New("set a duration or a count")
	}
	if cfg.Duration <= 0 {
		cfg.Duration = time.Hour // the count ends it
	}
	if cfg.KeySpace < 1 {
		cfg.KeySpace = 1
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	if cfg.Mix == "" {
		cfg.Mix = DefaultMix
	}
	return nil
}

// measure runs the workers: unmeasured through the warmup, then measured
// until the duration or the count runs out.
func (c *cell) measure(ctx context.Context) (Result, error) {
	var (
		started  = time.Now()
		measured = started.Add(c.Warmup)
		end      = measured.Add(c.Duration)
		ops      atomic.Int64 // measured operations begun
		done     atomic.Int64 // measured operations finished
		failed   atomic.Int64
		all      atomic.Int64 // every operation, the warmup's included
		wg       sync.WaitGroup
	)
	samples := make([][]time.Duration, c.Concurrency)
	codes := make([]map[string]int64, c.Concurrency)
	for i := range c.Concurrency {
		wg.Go(func() {
			w := &worker{id: i, rng: rand.New(rand.NewPCG(uint64(i), uint64(started.UnixNano())))}
			codes[i] = map[string]int64{}
			for range maxOpsPerWorker {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				inWindow := !t0.Before(measured)
				if inWindow && c.Count > 0 && ops.Add(1) > int64(c.Count) {
					return
				}
				opCtx, cancel := context.WithTimeout(ctx, c.OpTimeout)
				code := c.op(opCtx, w, c.Workload)
				cancel()
				all.Add(1)
				if !inWindow {
					continue
				}
				samples[i] = append(samples[i], time.Since(t0))
				done.Add(1)
				if code != "" {
					codes[i][code]++
					failed.Add(1)
				}
			}
		})
	}
	stop := c.reportProgress(measured, end, &done, &failed)
	wg.Wait()
	stop()
	elapsed := min(time.Since(measured), c.Duration)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r := c.result(elapsed, samples, codes)
	r.AllOps = all.Load()
	return r, nil
}

// reportProgress writes a line a second until stop is called.
func (c *cell) reportProgress(measured, end time.Time, done, failed *atomic.Int64) (stop func()) {
	if c.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(c.Progress, "\r\033[K")
				return
			case now := <-tick.C:
				phase, rate := "warmup", 0.0
				if s := now.Sub(measured).Seconds(); s > 0 {
					phase, rate = fmt.Sprintf("%.0fs left", end.Sub(now).Seconds()), float64(done.Load())/s
				}
				fmt.Fprintf(c.Progress, "\r\033[K%s %s c=%d: %s, %d ops, %.0f ops/s, %d errors",
					c.Workload, c.Protocol, c.Concurrency, phase, done.Load(), rate, failed.Load())
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}

func (c *cell) result(elapsed time.Duration, samples [][]time.Duration, codes []map[string]int64) Result {
	all := slices.Concat(samples...)
	slices.Sort(all)
	r := Result{
		Workload:    c.Workload,
		Protocol:    c.Protocol,
		Concurrency: c.Concurrency,
		Ops:         int64(len(all)),
		Seconds:     elapsed.Seconds(),
		RPCsPerOp:   RPCsPerOp(c.Workload),
		P50:         ms(quantile(all, 0.50)),
		P90:         ms(quantile(all, 0.90)),
		P99:         ms(quantile(all, 0.99)),
	}
	if len(all) > 0 {
		r.Max = ms(all[len(all)-1])
	}
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	for _, m := range codes {
		for code, n := range m {
			if r.Errors == nil {
				r.Errors = map[string]int64{}
			}
			r.Errors[code] += n
		}
	}
	if c.Workload == ClaimContended {
		r.Owners = len(c.holders)
	}
	return r
}

// quantile returns the q-quantile of sorted by the nearest-rank method.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
