package benchreport

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
)

// synthetic returns results of two workloads over gRPC and the ceiling at
// 1 and 64 clients, with figures chosen so that the targets' ratios are
// known: get-hit over gRPC is 0.25 of the ceiling, claim 0.5.
func synthetic() []bench.Result {
	var out []bench.Result
	for _, w := range []string{bench.GetHit, bench.Claim, bench.ClaimContended} {
		for _, c := range []int{1, 64} {
			for _, p := range []string{bench.GRPC, bench.Ceiling} {
				r := bench.Result{Workload: w, Protocol: p, Concurrency: c, Ops: 1000, Seconds: 1,
					OpsPerSec: 8000, P50: 0.5, P90: 0.9, P99: 1.5, Max: 3, ClientCPU: 50, DBCPU: 40}
				if p == bench.GRPC {
					r.OpsPerSec, r.ServerCPU, r.ServerRSSMiB = 2000, 100, 30
					if w == bench.Claim {
						r.OpsPerSec = 4000
					}
				}
				if w == bench.ClaimContended {
					r.Owners = 1
				}
				out = append(out, r)
			}
		}
	}
	return out
}

func TestWriteTableShowsEveryResult(t *testing.T) {
	t.Parallel()
	results := synthetic()
	results[0].Errors = map[string]int64{"unavailable": 3, "deadline_exceeded": 1}
	var b bytes.Buffer
	WriteTable(&b, results)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1+len(results) {
		t.Fatalf("%d lines, want a header and %d rows:\n%s", len(lines), len(results), b.String())
	}
	if !strings.Contains(lines[1], "deadline_exceeded:1 unavailable:3") || !strings.Contains(lines[1], "50+100+40") {
		t.Errorf("first row lacks sorted errors or the CPU split: %q", lines[1])
	}
	if !strings.Contains(lines[2], "50+-+40") {
		t.Errorf("the ceiling's row should show no server CPU: %q", lines[2])
	}
	if !strings.Contains(b.String(), "owners:1") {
		t.Errorf("contended rows lack the owner count:\n%s", b.String())
	}
}

func TestWriteReplacesOnlyTheGeneratedPart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	md, svg := filepath.Join(dir, "BENCH.md"), filepath.Join(dir, "bench.svg")
	prose, tail := "# Title\n\nHand-written method.\n", "\n## After\n\nMore prose.\n"
	if err := os.WriteFile(md, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	info := Info{Server: "separate process (cacheservice)", Postgres: "PostgreSQL 15.0", DBMaxConns: 8,
		Config:     bench.Config{Duration: 3e9, Warmup: 5e8, KeySpace: 10, Payload: 256, Mix: bench.DefaultMix},
		LoadBefore: "0.10, 0.20, 0.30", LoadAfter: "0.40, 0.50, 0.60"}
	// The first write appends the generated part; prose added after it by
	// hand must survive the second, which replaces the part, not adds to it.
	if err := Write(md, svg, info, synthetic()); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(md)
	if err := os.WriteFile(md, append(first, tail...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(md, svg, info, synthetic()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	if !strings.HasPrefix(doc, prose) || !strings.HasSuffix(doc, tail) || strings.Count(doc, beginMarker) != 1 || strings.Count(doc, endMarker) != 1 {
		t.Fatalf("document lost its prose or repeats the generated part:\n%s", doc)
	}
	for _, want := range []string{
		"#### get-hit", "#### claim-contended", "| grpc | 64 | 2000 |",
		"](bench.svg)", // relative to the document
		"separate process (cacheservice)", "PostgreSQL 15.0", "0.10, 0.20, 0.30",
		"| get-hit over gRPC at c=64 ≥ 0.50 × pgx | 2000 / 8000 ops/s = 0.25 | **no** |",
		"| claim over gRPC at c=64 ≥ 0.40 × pgx | 4000 / 8000 ops/s = 0.50 | yes |",
		"| claim-contended: exactly one owner throughout | 4 runs, each saw one owner and no errors | yes |",
		"| server RSS at 64 clients ≤ 64 MiB | peak 30.0 MiB | yes |",
		"| put over gRPC at c=64 ≥ 0.40 × pgx | not measured | |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q", want)
		}
	}
	if _, err := os.Stat(svg); err != nil {
		t.Errorf("no chart written: %v", err)
	}
}

func TestWriteFlagsASecondOwner(t *testing.T) {
	t.Parallel()
	results := synthetic()
	for i := range results {
		if results[i].Workload == bench.ClaimContended && results[i].Concurrency == 64 && results[i].Protocol == bench.GRPC {
			results[i].Owners = 2
		}
	}
	var b bytes.Buffer
	writeTargets(&b, results)
	if !strings.Contains(b.String(), "| claim-contended: exactly one owner throughout | 4 runs, see the table below | **no** |") {
		t.Errorf("two owners not flagged:\n%s", b.String())
	}
}

func TestChartDrawsALinePerWorkloadPlotAndSeries(t *testing.T) {
	t.Parallel()
	chart := Chart(synthetic())
	if err := xml.Unmarshal(chart, new(struct{})); err != nil {
		t.Fatalf("chart is not well-formed XML: %v\n%s", err, chart)
	}
	// 3 workloads × 2 plots (throughput, p99) × 2 series (grpc, pgx).
	if n := bytes.Count(chart, []byte("<polyline")); n != 3*2*2 {
		t.Errorf("chart has %d lines, want 12", n)
	}
	// Every point: 3 workloads × 2 plots × 2 series × 2 concurrencies.
	if n := bytes.Count(chart, []byte("<circle")); n != 24 {
		t.Errorf("chart has %d points, want 24", n)
	}
	for _, want := range []string{"get-hit: throughput (ops/s)", "claim: p99 latency (ms)", "pgx (raw ceiling)", `stroke-dasharray`} {
		if !bytes.Contains(chart, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestNiceMaxRoundsUp(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want float64 }{{0, 1}, {1, 1}, {1.5, 2}, {3, 4}, {4.5, 5}, {7, 10}, {8000, 10000}, {0.03, 0.04}} {
		if got := niceMax(c.in); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("niceMax(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// pairOf is a round of cell get-hit/grpc/64 with the given figures.
func pairOf(baseCPU, candCPU, baseOps, candOps float64) Pair {
	r := bench.Result{Workload: bench.GetHit, Protocol: bench.GRPC, Concurrency: 64, P50: 1, P99: 2, DBCPU: 40}
	b, c := r, r
	b.ServerCPU, b.OpsPerSec = baseCPU, baseOps
	c.ServerCPU, c.OpsPerSec = candCPU, candOps
	return Pair{Baseline: b, Candidate: c}
}

func TestCompareRatiosPairRoundByRound(t *testing.T) {
	t.Parallel()
	pairs := []Pair{pairOf(100, 50, 1000, 2000), pairOf(200, 60, 1000, 1500), pairOf(100, 80, 2000, 2000)}
	other := pairOf(100, 100, 1000, 1000)
	other.Baseline.Workload, other.Candidate.Workload = bench.ClaimContended, bench.ClaimContended
	other.Baseline.Owners, other.Candidate.Owners = 1, 2
	other.Candidate.Errors = map[string]int64{"unavailable": 2}
	comps := Compare(append(pairs, other))
	if len(comps) != 2 || comps[0].Workload != bench.GetHit || comps[1].Workload != bench.ClaimContended {
		t.Fatalf("cells %+v, want get-hit then claim-contended", comps)
	}
	c := comps[0]
	// Server CPU ratios per round: 0.5, 0.3, 0.8. Medians of figures: 100 → 60.
	if want := (Spread{Median: 0.5, Min: 0.3, Max: 0.8, Rounds: 3}); !near(c.ServerCPU, want) {
		t.Errorf("server CPU ratio %+v, want %+v", c.ServerCPU, want)
	}
	if c.Baseline.ServerCPU != 100 || c.Candidate.ServerCPU != 60 || c.Rounds != 3 {
		t.Errorf("medians %v → %v over %d rounds, want 100 → 60 over 3", c.Baseline.ServerCPU, c.Candidate.ServerCPU, c.Rounds)
	}
	if want := (Spread{Median: 1.5, Min: 1, Max: 2, Rounds: 3}); !near(c.OpsPerSec, want) {
		t.Errorf("throughput ratio %+v, want %+v", c.OpsPerSec, want)
	}
	if c.OneOwner != nil {
		t.Errorf("get-hit has an owner check: %v", *c.OneOwner)
	}
	d := comps[1]
	if d.OneOwner == nil || *d.OneOwner || d.Candidate.Errors != 2 || d.Baseline.Errors != 0 {
		t.Errorf("contended cell: owner check %v, errors %d/%d; want false and 0/2", d.OneOwner, d.Baseline.Errors, d.Candidate.Errors)
	}
	var b bytes.Buffer
	WriteComparison(&b, comps)
	for _, want := range []string{"100 → 60 ×0.50 [0.30–0.80]", "**MORE THAN ONE**", "0/2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("comparison table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCompareLeavesUnmeasuredRatiosOut(t *testing.T) {
	t.Parallel()
	// A server CPU of zero (a run shorter than a clock tick) has no ratio;
	// it must not become NaN or Inf, which JSON cannot carry.
	comps := Compare([]Pair{pairOf(0, 50, 1000, 1000), pairOf(100, 0, 1000, 1000)})
	if s := comps[0].ServerCPU; s != (Spread{}) {
		t.Errorf("ratio of unmeasured figures %+v, want none", s)
	}
	if _, err := json.Marshal(comps); err != nil {
		t.Fatalf("comparison is not JSON: %v", err)
	}
	var b bytes.Buffer
	WriteComparison(&b, comps)
	if !strings.Contains(b.String(), "×-") {
		t.Errorf("an unmeasured ratio should print as ×-:\n%s", b.String())
	}
}

func near(got, want Spread) bool {
	const eps = 1e-9
	return got.Rounds == want.Rounds && math.Abs(got.Median-want.Median) < eps &&
		math.Abs(got.Min-want.Min) < eps && math.Abs(got.Max-want.Max) < eps
}
