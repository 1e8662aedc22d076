package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cacheservice/cacheservice/internal/bench"
)

// TestSmokeRunEveryWorkloadAndProtocol runs each workload over each protocol
// and the ceiling briefly against a server the tool starts itself, and checks
// that every run did work without a single error. It times nothing.
func TestSmokeRunEveryWorkloadAndProtocol(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"run",
		"--workload", "all", "--protocol", "all", "--concurrency", "1,4",
		"--count", "30", "--duration", "20s", "--warmup", "0", "--keyspace", "20",
		"--json", jsonPath, "--progress=false",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
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
	}
	for _, w := range bench.Workloads {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("table lacks a row for %s:\n%s", w, stdout.String())
		}
	}
}

func TestReportWritesDocumentAndChart(t *testing.T) {
	dir := t.TempDir()
	md, svg := filepath.Join(dir, "BENCH.md"), filepath.Join(dir, "bench.svg")
	prose := "# Title\n\nHand-written method.\n"
	if err := os.WriteFile(md, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"report",
		"--workload", "get-hit,claim-contended", "--protocol", "grpc,pgx", "--concurrency", "1,2",
		"--count", "10", "--duration", "10s", "--warmup", "0", "--keyspace", "10",
		"--json", "", "--out", md, "--svg", svg, "--progress=false",
	}
	for range 2 { // the second run must replace the generated part, not add to it
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); err != nil {
			t.Fatalf("report: %v\nstderr:\n%s", err, stderr.String())
		}
	}
	doc, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(doc), prose) || strings.Count(string(doc), "BEGIN GENERATED") != 1 {
		t.Fatalf("document lost its prose or repeats the generated part:\n%s", doc)
	}
	for _, want := range []string{"#### get-hit", "| grpc | 2 |", "bench.svg", "exactly one owner"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("document lacks %q", want)
		}
	}
	chart, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(chart, new(struct{})); err != nil {
		t.Fatalf("chart is not well-formed XML: %v", err)
	}
	if n := strings.Count(string(chart), "<polyline"); n != 2*2*2 {
		t.Errorf("chart has %d lines, want 8 (2 workloads × 2 plots × 2 series)", n)
	}
}
