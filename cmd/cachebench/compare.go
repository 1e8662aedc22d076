package main

import (
	"context"
	"fmt"
	"io"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/benchreport"
)

// build is one of the two servers compare runs.
type build struct {
	name  string // baseline or candidate
	srv   *server
	bench *bench.Bench // its own, so each server preloads its own keys
	rss   *rssSampler
}

// comparison is what compare writes with --json.
type comparison struct {
	Baseline  string                   `json:"baseline"`
	Candidate string                   `json:"candidate"`
	Rounds    int                      `json:"rounds"`
	Cells     []benchreport.Comparison `json:"cells"`
	Runs      []benchreport.Pair       `json:"runs"`
}

// compare is 'cachebench compare': both builds run at once over one
// PostgreSQL cluster, each on a database of its own (so each migrates its
// own schema), and take turns cell by cell, round after round. Whichever
// went first in a cell goes second in the next round, so that a drift in
// the machine's load falls on both alike; ratios are paired per round.
func compare(ctx context.Context, opts *options, stdout, stderr io.Writer) error {
	var cl closers
	defer cl.close()
	db, err := startDatabase(ctx, opts.env, &cl)
	if err != nil {
		return err
	}
	var builds [2]*build
	for i, bin := range []string{opts.baseline, opts.candidate} {
		name := [2]string{"baseline", "candidate"}[i]
		url, err := db.create(ctx, "cachebench_"+name)
		if err != nil {
			return err
		}
		srv, err := startServer(ctx, bin, url, opts.env, &cl)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rss := sampleRSS(srv.pid)
		cl.add(rss.close)
		builds[i] = &build{name: name, srv: srv, bench: bench.New(), rss: rss}
	}
	var pairs []benchreport.Pair
	var all []bench.Result
	for round := range opts.rounds {
		cell := 0 // the cell's place in the round
		for _, workload := range opts.workloads {
			for _, c := range opts.concurrency {
				for _, protocol := range opts.protocols {
					cfg := opts.cellConfig(workload, protocol, c, stderr)
					first := (round + cell) % 2
					cell++
					var got [2]bench.Result
					for _, i := range []int{first, 1 - first} {
						b := builds[i]
						r, err := runCell(ctx, b.bench, nil, b.srv, db, cfg, b.rss)
						if err != nil {
							return fmt.Errorf("round %d, %s: %s over %s at concurrency %d: %w", round+1, b.name, workload, protocol, c, err)
						}
						fmt.Fprintf(stderr, "round %d %-9s %-15s %-13s c=%-3d %9.0f ops/s  server %5.0f µs/op  errors %d\n",
							round+1, b.name, workload, protocol, c, r.OpsPerSec, r.ServerCPU, r.ErrorCount())
						got[i] = r
						all = append(all, r)
					}
					pairs = append(pairs, benchreport.Pair{Baseline: got[0], Candidate: got[1]})
				}
			}
		}
	}
	cells := benchreport.Compare(pairs)
	benchreport.WriteComparison(stdout, cells)
	if opts.jsonOut != "" {
		out := comparison{Baseline: opts.baseline, Candidate: opts.candidate, Rounds: opts.rounds, Cells: cells, Runs: pairs}
		if err := writeJSON(opts.jsonOut, out); err != nil {
			return err
		}
	}
	if err := failures(all); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	return nil
}
