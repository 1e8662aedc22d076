package benchreport

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
)

// Pair is one round of one cell, measured on both builds back to back.
type Pair struct {
	Baseline  bench.Result `json:"baseline"`
	Candidate bench.Result `json:"candidate"`
}

// Spread is a ratio candidate/baseline over the rounds where both builds
// measured the figure: its median, least and greatest. Rounds is 0 when no
// round did (then the other fields are 0, not NaN, so the JSON stays valid).
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Rounds int     `json:"rounds"`
}

// Figures are the medians over rounds of one build's measurements.
type Figures struct {
	ServerCPU float64 `json:"server_cpu_us_per_op"`
	DBCPU     float64 `json:"db_cpu_us_per_op"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	Errors    int64   `json:"errors"` // the total over rounds
}

// Comparison is one cell (workload × protocol × concurrency) of compare.
type Comparison struct {
	Workload    string  `json:"workload"`
	Protocol    string  `json:"protocol"`
	Concurrency int     `json:"concurrency"`
	Rounds      int     `json:"rounds"`
	Baseline    Figures `json:"baseline"`
	Candidate   Figures `json:"candidate"`
	// Ratios are candidate/baseline, paired round by round.
	ServerCPU Spread `json:"server_cpu_ratio"`
	DBCPU     Spread `json:"db_cpu_ratio"`
	OpsPerSec Spread `json:"ops_per_sec_ratio"`
	P50       Spread `json:"p50_ratio"`
	P99       Spread `json:"p99_ratio"`
	// OneOwner is set for workloads that check exactly-one-owner: true when
	// every round on both builds saw exactly one.
	OneOwner *bool `json:"exactly_one_owner,omitempty"`
}

// figures picks each figure compared out of a result.
var figures = []struct {
	of    func(bench.Result) float64
	ratio func(*Comparison) *Spread
	med   func(*Figures) *float64
}{
	{func(r bench.Result) float64 { return r.ServerCPU }, func(c *Comparison) *Spread { return &c.ServerCPU }, func(f *Figures) *float64 { return &f.ServerCPU }},
	{func(r bench.Result) float64 { return r.DBCPU }, func(c *Comparison) *Spread { return &c.DBCPU }, func(f *Figures) *float64 { return &f.DBCPU }},
	{func(r bench.Result) float64 { return r.OpsPerSec }, func(c *Comparison) *Spread { return &c.OpsPerSec }, func(f *Figures) *float64 { return &f.OpsPerSec }},
	{func(r bench.Result) float64 { return r.P50 }, func(c *Comparison) *Spread { return &c.P50 }, func(f *Figures) *float64 { return &f.P50 }},
	{func(r bench.Result) float64 { return r.P99 }, func(c *Comparison) *Spread { return &c.P99 }, func(f *Figures) *float64 { return &f.P99 }},
}

// Compare groups the pairs by cell, in the order cells first appear, and
// sums each cell up.
func Compare(pairs []Pair) []Comparison {
	type cell struct {
		workload, protocol string
		concurrency        int
	}
	var order []cell
	byCell := map[cell][]Pair{}
	for _, p := range pairs {
		k := cell{p.Baseline.Workload, p.Baseline.Protocol, p.Baseline.Concurrency}
		if _, ok := byCell[k]; !ok {
			order = append(order, k)
		}
		byCell[k] = append(byCell[k], p)
	}
	out := make([]Comparison, 0, len(order))
	for _, k := range order {
		rounds := byCell[k]
		c := Comparison{Workload: k.workload, Protocol: k.protocol, Concurrency: k.concurrency, Rounds: len(rounds)}
		for _, f := range figures {
			var base, cand, ratios []float64
			for _, p := range rounds {
				b, x := f.of(p.Baseline), f.of(p.Candidate)
				base, cand = append(base, b), append(cand, x)
				if b > 0 && x > 0 {
					ratios = append(ratios, x/b)
				}
			}
			*f.med(&c.Baseline), *f.med(&c.Candidate) = median(base), median(cand)
			*f.ratio(&c) = spreadOf(ratios)
		}
		one := true
		for _, p := range rounds {
			c.Baseline.Errors += p.Baseline.ErrorCount()
			c.Candidate.Errors += p.Candidate.ErrorCount()
			one = one && p.Baseline.Owners == 1 && p.Candidate.Owners == 1
		}
		if k.workload == bench.ClaimContended {
			c.OneOwner = &one
		}
		out = append(out, c)
	}
	return out
}

func spreadOf(ratios []float64) Spread {
	if len(ratios) == 0 {
		return Spread{}
	}
	return Spread{Median: median(ratios), Min: slices.Min(ratios), Max: slices.Max(ratios), Rounds: len(ratios)}
}

// median of values; the mean of the middle two when their number is even.
func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(values))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// WriteComparison prints one row per cell: for each figure the baseline's
// and candidate's medians and the ratio candidate/baseline with its spread
// over rounds; then errors of each build and the owner check.
func WriteComparison(w io.Writer, comps []Comparison) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tprotocol\tconc\trounds\tserver CPU µs/op\tPostgreSQL CPU µs/op\tops/s\tp50 ms\tp99 ms\terrors base/cand\towners\t")
	for _, c := range comps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t\n", c.Workload, c.Protocol, c.Concurrency, c.Rounds,
			pairText(c.Baseline.ServerCPU, c.Candidate.ServerCPU, c.ServerCPU, "%.0f"),
			pairText(c.Baseline.DBCPU, c.Candidate.DBCPU, c.DBCPU, "%.0f"),
			pairText(c.Baseline.OpsPerSec, c.Candidate.OpsPerSec, c.OpsPerSec, "%.0f"),
			pairText(c.Baseline.P50, c.Candidate.P50, c.P50, "%.2f"),
			pairText(c.Baseline.P99, c.Candidate.P99, c.P99, "%.2f"),
			c.Baseline.Errors, c.Candidate.Errors, ownerText(c.OneOwner))
	}
	tw.Flush()
	fmt.Fprintln(w, "Each figure: baseline → candidate (medians over rounds), ×ratio candidate/baseline [least–greatest over rounds].")
}

func pairText(base, cand float64, s Spread, format string) string {
	text := fmt.Sprintf(format+" → "+format, base, cand)
	if s.Rounds == 0 {
		return text + " ×-"
	}
	return text + fmt.Sprintf(" ×%.2f [%.2f–%.2f]", s.Median, s.Min, s.Max)
}

func ownerText(one *bool) string {
	switch {
	case one == nil:
		return "-"
	case *one:
		return "one"
	}
	return "**MORE THAN ONE**"
}
