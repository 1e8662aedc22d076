// Command cachebench generates load on the cache service and measures it.
//
//	cachebench run    [flags]   measure workloads and print a table (and JSON)
//	cachebench report [flags]   run the published matrix and rewrite docs/BENCHMARKS.md
//	cachebench serve  [flags]   serve the service's packages alone, for --server-bin self
//
// By default it starts its own embedded PostgreSQL and a server over it, in
// process or, with --server-bin, as a separate process; --target measures a
// running server instead. The protocol "pgx" is the ceiling: the store's own
// statements run directly on the same database at the same concurrency.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cacheservice/cacheservice/internal/bench"
	"github.com/cacheservice/cacheservice/internal/benchreport"
	"github.com/cacheservice/cacheservice/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(1)
	}
}

// options are the flags of both subcommands.
type options struct {
	env         envConfig
	workloads   []string
	protocols   []string
	concurrency []int
	run         bench.Config
	jsonOut     string
	mdOut       string
	svgOut      string
	cpuProfile  string
	progress    bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return serve(ctx, args[1:], stderr)
	}
	if len(args) == 0 || (args[0] != "run" && args[0] != "report") {
		return errors.New("usage: cachebench run|report|serve [flags] (-h for flags)")
	}
	report := args[0] == "report"
	opts, err := parseFlags(args[0], args[1:], report, stderr)
	if err != nil {
		return err
	}
	opts.env.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	before := benchreport.Load()
	results, info, err := measure(ctx, opts, stderr)
	if err != nil {
		return err
	}
	benchreport.WriteTable(stdout, results)
	if opts.jsonOut != "" {
		if err := writeJSON(opts.jsonOut, results); err != nil {
			return err
		}
	}
	if report {
		info.LoadBefore, info.LoadAfter = before, benchreport.Load()
		if err := benchreport.Write(opts.mdOut, opts.svgOut, info, results); err != nil {
			return err
		}
	}
	return failures(results)
}

// failures reports runs that saw errors, or more than one owner of a
// contended key, so that a smoke run in CI fails on them; the table and
// files are written first.
func failures(results []bench.Result) error {
	var bad []string
	for _, r := range results {
		if r.ErrorCount() > 0 || (r.Workload == bench.ClaimContended && r.Owners != 1) {
			bad = append(bad, fmt.Sprintf("%s over %s at %d", r.Workload, r.Protocol, r.Concurrency))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d runs had errors or more than one owner: %s", len(bad), strings.Join(bad, "; "))
	}
	return nil
}

func parseFlags(name string, args []string, report bool, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("cachebench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	def := func(run, rep string) string {
		if report {
			return rep
		}
		return run
	}
	workloads := fs.String("workload", def(bench.GetHit, "all"), "workloads, comma-separated, or all: "+strings.Join(bench.Workloads, ", "))
	protocols := fs.String("protocol", def(bench.GRPC, "all"), "protocols, comma-separated, or all: "+strings.Join(bench.Protocols, ", ")+", and "+bench.Ceiling+" (the raw-pgx ceiling)")
	concurrency := fs.String("concurrency", def("16", "1,16,64"), "concurrent clients, comma-separated")
	dur, _ := time.ParseDuration(def("5s", "3s"))
	warm, _ := time.ParseDuration(def("1s", "500ms"))
	fs.DurationVar(&o.run.Duration, "duration", dur, "measured time per run")
	fs.IntVar(&o.run.Count, "count", 0, "stop each run after this many operations (0: by duration only)")
	fs.DurationVar(&o.run.Warmup, "warmup", warm, "unmeasured time before each run")
	fs.IntVar(&o.run.KeySpace, "keyspace", 10000, "keys that get-hit and put spread over")
	fs.IntVar(&o.run.Payload, "payload", 256, "bytes of inline output per Put")
	fs.StringVar(&o.run.Mix, "mix", bench.DefaultMix, "workload weights of mixed")
	fs.StringVar(&o.env.target, "target", "", "URL of a running server to measure (default: start one)")
	fs.StringVar(&o.env.databaseURL, "database-url", "", "database of the ceiling, and of the started server (default: an embedded one)")
	fs.StringVar(&o.env.serverBin, "server-bin", "", "cacheservice binary to run as a separate process, or self for 'cachebench serve' (default: serve in process)")
	serverArgs := fs.String("server-args", "", "extra arguments for the server binary, space-separated")
	fs.StringVar(&o.env.dataDir, "data-dir", "", "directory of the embedded database (default: temporary)")
	fs.BoolVar(&o.env.durable, "durable", false, "run the embedded database with fsync on")
	fs.IntVar(&o.env.dbMaxConns, "db-max-conns", 8, "pool size of the started server and of the ceiling (8 measured best for both on 2 cores)")
	fs.StringVar(&o.jsonOut, "json", def("", "docs/benchmarks.json"), "write the results as JSON to this file")
	fs.StringVar(&o.mdOut, "out", "docs/BENCHMARKS.md", "report: the markdown file whose generated part to rewrite")
	fs.StringVar(&o.svgOut, "svg", "docs/benchmarks.svg", "report: the chart to write")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (client, and an in-process server)")
	fs.BoolVar(&o.progress, "progress", isTerminal(stderr), "show a progress line")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.workloads, err = list(*workloads, bench.Workloads, bench.Workloads); err != nil {
		return nil, err
	}
	all := append(slices.Clone(bench.Protocols), bench.Ceiling)
	if o.protocols, err = list(*protocols, all, all); err != nil {
		return nil, err
	}
	for c := range strings.SplitSeq(*concurrency, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("concurrency %q: want positive numbers, comma-separated", c)
		}
		o.concurrency = append(o.concurrency, n)
	}
	o.env.serverArgs = strings.Fields(*serverArgs)
	if o.env.target != "" && o.env.serverBin != "" {
		return nil, errors.New("--target and --server-bin exclude each other")
	}
	return o, nil
}

// list parses a comma-separated choice of known names; "all" means every one.
func list(spec string, known, all []string) ([]string, error) {
	if spec == "all" {
		return all, nil
	}
	var out []string
	for name := range strings.SplitSeq(spec, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown name %q (want one of %s, or all)", name, strings.Join(known, ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

// measure runs every workload × protocol × concurrency of opts, one after
// another, on one server and database.
func measure(ctx context.Context, opts *options, stderr io.Writer) ([]bench.Result, benchreport.Info, error) {
	e, err := startEnv(ctx, opts.env)
	if err != nil {
		return nil, benchreport.Info{}, err
	}
	defer e.close()
	if opts.cpuProfile != "" {
		f, err := os.Create(opts.cpuProfile)
		if err != nil {
			return nil, benchreport.Info{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, benchreport.Info{}, err
		}
		defer pprof.StopCPUProfile()
	}
	info := benchreport.Info{Server: e.serverKind, DBMaxConns: opts.env.dbMaxConns, Durable: opts.env.durable, Config: opts.run}
	info.Postgres = benchreport.PostgresVersion(ctx, e.databaseURL)
	var ceiling *store.Store
	if slices.Contains(opts.protocols, bench.Ceiling) {
		if e.databaseURL == "" {
			return nil, info, errors.New("the pgx ceiling needs --database-url with --target")
		}
		ceiling, err = store.Open(ctx, store.Config{URL: e.databaseURL, MaxConns: int32(opts.env.dbMaxConns)})
		if err != nil {
			return nil, info, err
		}
		defer ceiling.Close()
	}
	rss := sampleRSS(e.serverPID)
	defer rss.close()
	b := bench.New()
	var results []bench.Result
	// Protocols vary fastest, so that the cells whose throughputs are compared
	// (a protocol and the ceiling at one concurrency) run back to back and
	// meet much the same load from the rest of the machine.
	for _, workload := range opts.workloads {
		for _, c := range opts.concurrency {
			for _, protocol := range opts.protocols {
				cfg := opts.run
				cfg.Workload, cfg.Protocol, cfg.Concurrency = workload, protocol, c
				if opts.progress {
					cfg.Progress = stderr
				}
				r, err := runOne(ctx, b, e, ceiling, cfg, rss)
				select {
				case <-e.serverDone:
					err = errors.Join(err, errors.New("the server process exited during the run"))
				default:
				}
				if err != nil {
					return nil, info, fmt.Errorf("%s over %s at concurrency %d: %w", workload, protocol, c, err)
				}
				fmt.Fprintf(stderr, "%-15s %-13s c=%-3d %9.0f ops/s  p99 %7.2fms  errors %d\n",
					workload, protocol, c, r.OpsPerSec, r.P99, r.ErrorCount())
				results = append(results, r)
			}
		}
	}
	return results, info, nil
}

func runOne(ctx context.Context, b *bench.Bench, e *env, ceiling *store.Store, cfg bench.Config, rss *rssSampler) (bench.Result, error) {
	var d bench.Driver
	if cfg.Protocol == bench.Ceiling {
		d = bench.NewCeilingDriver(ceiling)
	} else {
		rpc, closeIdle, err := bench.NewRPCDriver(e.baseURL, cfg.Protocol, cfg.Concurrency)
		if err != nil {
			return bench.Result{}, err
		}
		defer closeIdle()
		d = rpc
	}
	if err := b.Prepare(ctx, d, cfg); err != nil {
		return bench.Result{}, err
	}
	rss.takePeak()
	before := takeCPU(e)
	r, err := b.Run(ctx, d, cfg)
	after := takeCPU(e)
	ops := r.AllOps
	r.ClientCPU = perOp(before.client, after.client, ops)
	r.DBCPU = perOp(before.db, after.db, ops)
	if cfg.Protocol != bench.Ceiling {
		r.ServerRSSMiB = rss.takePeak()
		r.ServerCPU = perOp(before.server, after.server, ops)
	}
	return r, err
}

func writeJSON(path string, results []bench.Result) error {
	data, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// isTerminal reports whether w is a character device, where a progress line
// that rewrites itself reads well.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
