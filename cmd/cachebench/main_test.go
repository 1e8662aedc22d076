package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/benchreport"
)

// binDir holds the cacheservice binary the tests run, built once by the
// first test that needs it.
var (
	binDir    string
	serverBin = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "cachebench-test-bin-")
		if err != nil {
			return "", err
		}
		binDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return buildServer(ctx, dir)
	})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// builtServer returns the freshly built server binary, or fails t.
func builtServer(t *testing.T) string {
	t.Helper()
	bin, err := serverBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestSmokeReportEveryWorkloadAndProtocol runs each workload over each
// protocol and the ceiling briefly against the real server binary, which the
// tool starts over its own database, and checks that every run did work
// without a single error and that the report files were written. It times
// nothing.
func TestSmokeReportEveryWorkloadAndProtocol(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	jsonPath, md, svg := filepath.Join(dir, "out.json"), filepath.Join(dir, "BENCH.md"), filepath.Join(dir, "bench.svg")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"report", "--server-bin", builtServer(t),
		"--workload", "all", "--protocol", "all", "--concurrency", "1,4",
		"--count", "30", "--duration", "20s", "--warmup", "0", "--keyspace", "20",
		"--json", jsonPath, "--out", md, "--svg", svg, "--progress=false",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("report: %v\nstderr:\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var results []bench.Result
	if err := json.Unmarshal(data, &results); err != nil {
		t.Fatalf("results are not JSON: %v", err)
	}
	protocols := append(slices.Clone(bench.Protocols), bench.Ceiling)
	if want := len(bench.Workloads) * len(protocols) * 2; len(results) != want {
		t.Fatalf("%d results, want %d", len(results), want)
	}
	for _, r := range results {
		name := r.Workload + "/" + r.Protocol
		if r.Ops != 30 || r.OpsPerSec <= 0 {
			t.Errorf("%s c=%d: %d ops at %.0f/s, want 30 at a positive rate", name, r.Concurrency, r.Ops, r.OpsPerSec)
		}
		if len(r.Errors) > 0 {
			t.Errorf("%s c=%d: errors %v", name, r.Concurrency, r.Errors)
		}
		if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max) {
			t.Errorf("%s c=%d: latencies out of order: %+v", name, r.Concurrency, r)
		}
		if r.Workload == bench.ClaimContended && r.Owners != 1 {
			t.Errorf("%s c=%d: %d owners of the contended key, want 1", name, r.Concurrency, r.Owners)
		}
		if r.Protocol != bench.Ceiling && r.ServerRSSMiB <= 0 {
			t.Errorf("%s c=%d: no server memory read from the server process", name, r.Concurrency)
		}
	}
	for _, w := range bench.Workloads {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("table lacks a row for %s:\n%s", w, stdout.String())
		}
	}
	doc, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"separate process (cacheservice)", "#### lifecycle", "exactly one owner"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := os.Stat(svg); err != nil {
		t.Errorf("no chart: %v", err)
	}
}

// TestCompareReportsEveryCell runs compare on two copies of the same
// build for one short round, and checks that every cell is there, paired,
// with zero errors and one owner of the contended key. It times nothing:
// the ratios of a tiny run say nothing.
func TestCompareReportsEveryCell(t *testing.T) {
	t.Parallel()
	bin := builtServer(t)
	dir := t.TempDir()
	baseline, candidate := filepath.Join(dir, "baseline"), filepath.Join(dir, "candidate")
	for _, p := range []string{baseline, candidate} {
		copyFile(t, bin, p)
	}
	jsonPath := filepath.Join(dir, "compare.json")
	workloads := []string{bench.GetHit, bench.Put, bench.ClaimContended, bench.Lifecycle}
	protocols := []string{bench.GRPC, bench.ConnectProto}
	concurrency := []int{1, 4}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"compare", "--baseline", baseline, "--candidate", candidate,
		"--rounds", "1", "--workload", strings.Join(workloads, ","), "--protocol", strings.Join(protocols, ","),
		"--concurrency", "1,4", "--count", "20", "--duration", "20s", "--warmup", "0", "--keyspace", "20",
		"--json", jsonPath, "--progress=false",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("compare: %v\nstderr:\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var out comparison
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	if out.Rounds != 1 || out.Baseline != baseline || out.Candidate != candidate {
		t.Errorf("header: rounds %d, baseline %q, candidate %q", out.Rounds, out.Baseline, out.Candidate)
	}
	want := len(workloads) * len(protocols) * len(concurrency)
	if len(out.Cells) != want || len(out.Runs) != want {
		t.Fatalf("%d cells and %d runs, want %d of each", len(out.Cells), len(out.Runs), want)
	}
	table := stdout.String()
	for _, w := range workloads {
		for _, p := range protocols {
			for _, c := range concurrency {
				i := slices.IndexFunc(out.Cells, func(x benchreport.Comparison) bool {
					return x.Workload == w && x.Protocol == p && x.Concurrency == c
				})
				if i < 0 {
					t.Errorf("no cell for %s over %s at %d", w, p, c)
					continue
				}
				cell := out.Cells[i]
				if cell.Rounds != 1 || cell.Baseline.Errors != 0 || cell.Candidate.Errors != 0 {
					t.Errorf("%s/%s/%d: %d rounds, errors %d/%d; want 1 round, no errors", w, p, c, cell.Rounds, cell.Baseline.Errors, cell.Candidate.Errors)
				}
				if cell.Baseline.OpsPerSec <= 0 || cell.Candidate.OpsPerSec <= 0 || cell.OpsPerSec.Rounds != 1 {
					t.Errorf("%s/%s/%d: throughput %v → %v, ratio over %d rounds; want both measured", w, p, c,
						cell.Baseline.OpsPerSec, cell.Candidate.OpsPerSec, cell.OpsPerSec.Rounds)
				}
				if (w == bench.ClaimContended) != (cell.OneOwner != nil) || (cell.OneOwner != nil && !*cell.OneOwner) {
					t.Errorf("%s/%s/%d: owner check %v", w, p, c, cell.OneOwner)
				}
				if !hasRow(table, w, p, strconv.Itoa(c)) {
					t.Errorf("table lacks the row of %s over %s at %d:\n%s", w, p, c, table)
				}
			}
		}
	}
	for _, r := range out.Runs {
		if r.Baseline.Workload != r.Candidate.Workload || r.Baseline.Protocol != r.Candidate.Protocol || r.Baseline.Concurrency != r.Candidate.Concurrency {
			t.Errorf("a pair mixes cells: %+v", r)
		}
		if r.Baseline.ServerRSSMiB <= 0 || r.Candidate.ServerRSSMiB <= 0 {
			t.Errorf("%s: server memory not read from both processes", r.Baseline.Workload)
		}
	}
}

// hasRow reports whether a line of table starts with the given fields.
func hasRow(table string, fields ...string) bool {
	for line := range strings.Lines(table) {
		if f := strings.Fields(line); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestJSONKeepsEveryResult writes synthetic results as run and report do,
// and reads them back unchanged.
func TestJSONKeepsEveryResult(t *testing.T) {
	t.Parallel()
	results := []bench.Result{
		{Workload: bench.GetHit, Protocol: bench.GRPC, Concurrency: 64, Ops: 1000, Seconds: 1, OpsPerSec: 1000,
			RPCsPerOp: 1, P50: 0.5, P90: 0.9, P99: 1.5, Max: 3, AllOps: 1200, ServerRSSMiB: 30, ClientCPU: 50, ServerCPU: 100, DBCPU: 40},
		{Workload: bench.ClaimContended, Protocol: bench.Ceiling, Concurrency: 1, Ops: 10, Owners: 1,
			Errors: map[string]int64{"unavailable": 2}},
	}
	path := filepath.Join(t.TempDir(), "out.json")
	if err := writeJSON(path, results); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back []bench.Result
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, results) {
		t.Errorf("read back %+v, want %+v", back, results)
	}
	for _, key := range []string{`"server_cpu_us_per_op": 100`, `"p99_ms": 1.5`, `"owners": 1`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s:\n%s", key, data)
		}
	}
}

// TestFlagsRefuseWhatCannotRun checks the usage errors, which start nothing.
func TestFlagsRefuseWhatCannotRun(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "usage"},
		{[]string{"serve"}, "usage"}, // the in-process server is gone
		{[]string{"run", "--target", "http://127.0.0.1:1", "--server-bin", "x"}, "exclude each other"},
		{[]string{"run", "--protocol", "smoke-signals"}, `unknown name "smoke-signals"`},
		{[]string{"run", "--concurrency", "0"}, "concurrency"},
		{[]string{"compare", "--baseline", "a"}, "--baseline and --candidate"},
		{[]string{"compare", "--baseline", "a", "--candidate", "b", "--protocol", "pgx"}, `unknown name "pgx"`},
		{[]string{"compare", "--baseline", "a", "--candidate", "b", "--rounds", "0"}, "--rounds"},
		{[]string{"compare", "--baseline", "a", "--candidate", "b", "--target", "http://127.0.0.1:1"}, "not defined"},
	} {
		err := run(t.Context(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}
