// Command cachebench generates load on the cache service and measures it.
//
//	cachebench run     [flags]   measure workloads and print a table (and JSON)
//	cachebench report  [flags]   run the published matrix and rewrite docs/BENCHMARKS.md
//	cachebench compare --baseline BIN --candidate BIN [flags]
//	                             run two builds of the server alternately, cell by cell,
//	                             and print the ratios candidate/baseline
//
// It always measures the real cacheservice binary, run as a separate process
// over an embedded PostgreSQL it starts (--server-bin, or a build of this
// module's cmd/cacheservice when not given), or a server already running at
// --target. The protocol "pgx" is the ceiling: the store's own statements
// run directly on the same database at the same concurrency.
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

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/benchreport"
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

// options are the flags of every subcommand.
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
	// compare only
	baseline, candidate string
	rounds              int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || !slices.Contains([]string{"run", "report", "compare"}, args[0]) {
		return errors.New("usage: cachebench run|report|compare [flags] (-h for flags)")
	}
	opts, err := parseFlags(args[0], args[1:], stderr)
	if err != nil {
		return err
	}
	opts.env.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if args[0] == "compare" {
		return compare(ctx, opts, stdout, stderr)
	}
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
	if args[0] == "report" {
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

func parseFlags(name string, args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("cachebench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	report, comparing := name == "report", name == "compare"
	def := func(run, rep, cmp string) string {
		switch {
		case report:
			return rep
		case comparing:
			return cmp
		}
		return run
	}
	protocolChoice := append(slices.Clone(bench.Protocols), bench.Ceiling)
	protocolHelp := "protocols, comma-separated, or all: " + strings.Join(bench.Protocols, ", ") + ", and " + bench.Ceiling + " (the raw-pgx ceiling)"
	if comparing {
		// The ceiling runs this tool's own store code: the same for both builds.
		protocolChoice = bench.Protocols
		protocolHelp = "protocols, comma-separated, or all: " + strings.Join(bench.Protocols, ", ")
	}
	workloads := fs.String("workload", def(bench.GetHit, "all", "get-hit,put,claim,claim-contended"), "workloads, comma-separated, or all: "+strings.Join(bench.Workloads, ", "))
	protocols := fs.String("protocol", def(bench.GRPC, "all", "grpc,connect-proto"), protocolHelp)
	concurrency := fs.String("concurrency", def("16", "1,16,64", "1,64"), "concurrent clients, comma-separated")
	dur, _ := time.ParseDuration(def("5s", "3s", "3s"))
	warm, _ := time.ParseDuration(def("1s", "500ms", "500ms"))
	fs.DurationVar(&o.run.Duration, "duration", dur, "measured time per run")
	fs.IntVar(&o.run.Count, "count", 0, "stop each run after this many operations (0: by duration only)")
	fs.DurationVar(&o.run.Warmup, "warmup", warm, "unmeasured time before each run")
	fs.IntVar(&o.run.KeySpace, "keyspace", 10000, "keys that get-hit and put spread over")
	fs.IntVar(&o.run.Payload, "payload", 256, "bytes of inline output per Put")
	fs.StringVar(&o.run.Mix, "mix", bench.DefaultMix, "workload weights of mixed")
	if comparing {
		fs.StringVar(&o.baseline, "baseline", "", "cacheservice binary to compare against (required)")
		fs.StringVar(&o.candidate, "candidate", "", "cacheservice binary to compare (required)")
		fs.IntVar(&o.rounds, "rounds", 3, "times each cell runs on each build, alternating")
	} else {
		fs.StringVar(&o.env.target, "target", "", "URL of a running server to measure (default: start the server binary)")
		fs.StringVar(&o.env.databaseURL, "database-url", "", "database of the ceiling, and of the started server (default: an embedded one)")
		fs.StringVar(&o.env.serverBin, "server-bin", "", "cacheservice binary to run as a separate process (default: go build this module's cmd/cacheservice)")
		fs.StringVar(&o.mdOut, "out", "docs/BENCHMARKS.md", "report: the markdown file whose generated part to rewrite")
		fs.StringVar(&o.svgOut, "svg", "docs/benchmarks.svg", "report: the chart to write")
		fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the client)")
	}
	serverArgs := fs.String("server-args", "", "extra arguments for the server binary, space-separated")
	fs.StringVar(&o.env.dataDir, "data-dir", "", "directory of the embedded database (default: temporary)")
	fs.BoolVar(&o.env.durable, "durable", false, "run the embedded database with fsync on")
	fs.IntVar(&o.env.dbMaxConns, "db-max-conns", 8, "pool size of the started server and of the ceiling (8 measured best for both on 2 cores)")
	fs.StringVar(&o.jsonOut, "json", def("", "docs/benchmarks.json", ""), "write the results as JSON to this file")
	fs.BoolVar(&o.progress, "progress", isTerminal(stderr), "show a progress line")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.workloads, err = list(*workloads, bench.Workloads); err != nil {
		return nil, err
	}
	if o.protocols, err = list(*protocols, protocolChoice); err != nil {
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
	if comparing && (o.baseline == "" || o.candidate == "") {
		return nil, errors.New("compare needs --baseline and --candidate")
	}
	if comparing && o.rounds < 1 {
		return nil, errors.New("--rounds must be at least 1")
	}
	return o, nil
}

// list parses a comma-separated choice of known names; "all" means every one.
func list(spec string, known []string) ([]string, error) {
	if spec == "all" {
		return known, nil
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

// startEnv brings up what cfg asks to measure: the server at --target, or
// the server binary (built if not given) over the database.
func startEnv(ctx context.Context, cfg envConfig, cl *closers) (*server, *database, error) {
	if cfg.target != "" {
		return &server{baseURL: cfg.target, kind: "external, at " + cfg.target}, &database{url: cfg.databaseURL}, nil
	}
	db, err := startDatabase(ctx, cfg, cl)
	if err != nil {
		return nil, nil, err
	}
	bin := cfg.serverBin
	if bin == "" {
		dir, err := os.MkdirTemp("", "cachebench-bin-")
		if err != nil {
			return nil, nil, err
		}
		cl.add(func() { os.RemoveAll(dir) })
		if bin, err = buildServer(ctx, dir); err != nil {
			return nil, nil, err
		}
	}
	srv, err := startServer(ctx, bin, db.url, cfg, cl)
	return srv, db, err
}

// measure runs every workload × protocol × concurrency of opts, one after
// another, on one server and database.
func measure(ctx context.Context, opts *options, stderr io.Writer) ([]bench.Result, benchreport.Info, error) {
	var cl closers
	defer cl.close()
	srv, db, err := startEnv(ctx, opts.env, &cl)
	if err != nil {
		return nil, benchreport.Info{}, err
	}
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
	info := benchreport.Info{Server: srv.kind, DBMaxConns: opts.env.dbMaxConns, Durable: opts.env.durable, Config: opts.run}
	info.Postgres = benchreport.PostgresVersion(ctx, db.url)
	var ceiling *store.Store
	if slices.Contains(opts.protocols, bench.Ceiling) {
		if db.url == "" {
			return nil, info, errors.New("the pgx ceiling needs --database-url with --target")
		}
		// The server's own store settings (lock timeout included), on a
		// pool as large as the server's.
		cfg := store.DefaultConfig()
		cfg.URL, cfg.MaxConns = db.url, int32(opts.env.dbMaxConns)
		ceiling, err = store.Open(ctx, cfg)
		if err != nil {
			return nil, info, err
		}
		defer ceiling.Close()
	}
	rss := sampleRSS(srv.pid)
	defer rss.close()
	b := bench.New()
	var results []bench.Result
	// Protocols vary fastest, so that the cells whose throughputs are compared
	// (a protocol and the ceiling at one concurrency) run back to back and
	// meet much the same load from the rest of the machine.
	for _, workload := range opts.workloads {
		for _, c := range opts.concurrency {
			for _, protocol := range opts.protocols {
				cfg := opts.cellConfig(workload, protocol, c, stderr)
				var d bench.Driver
				if protocol == bench.Ceiling {
					d = bench.NewCeilingDriver(ceiling)
				}
				r, err := runCell(ctx, b, d, srv, db, cfg, rss)
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

// cellConfig is the run of one cell.
func (o *options) cellConfig(workload, protocol string, concurrency int, stderr io.Writer) bench.Config {
	cfg := o.run
	cfg.Workload, cfg.Protocol, cfg.Concurrency = workload, protocol, concurrency
	if o.progress {
		cfg.Progress = stderr
	}
	return cfg
}

// runCell measures one cell against srv, over cfg.Protocol or, when d is
// given, that driver (the ceiling), with the CPU of each process around it.
func runCell(ctx context.Context, b *bench.Bench, d bench.Driver, srv *server, db *database, cfg bench.Config, rss *rssSampler) (bench.Result, error) {
	if d == nil {
		rpc, closeIdle, err := bench.NewRPCDriver(srv.baseURL, cfg.Protocol, cfg.Concurrency)
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
	before := takeCPU(srv.pid, db.pid)
	r, err := b.Run(ctx, d, cfg)
	after := takeCPU(srv.pid, db.pid)
	ops := r.AllOps
	r.ClientCPU = perOp(before.client, after.client, ops)
	r.DBCPU = perOp(before.db, after.db, ops)
	if cfg.Protocol != bench.Ceiling {
		r.ServerRSSMiB = rss.takePeak()
		r.ServerCPU = perOp(before.server, after.server, ops)
	}
	if srv.exited() {
		err = errors.Join(err, errors.New("the server process exited during the run"))
	}
	return r, err
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
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
