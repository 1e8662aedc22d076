package benchreport

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"

	"github.com/cacheservice/cacheservice/cmd/cachebench/internal/bench"
)

// Chart geometry, in SVG user units.
const (
	panelW, panelH = 360, 170 // one plot, axes included
	plotL, plotR   = 58, 12   // margins inside a panel
	plotT, plotB   = 26, 28
	chartPad       = 20
	legendH        = 40
)

// colors per series; the ceiling is grey and dashed.
var colors = map[string]string{
	bench.ConnectJSON:  "#1f77b4",
	bench.ConnectProto: "#ff7f0e",
	bench.ConnectH2:    "#9467bd",
	bench.GRPC:         "#2ca02c",
	bench.Flyte:        "#d62728",
	bench.Ceiling:      "#555555",
}

// Chart draws, for each workload, throughput and p99 latency against
// concurrency, one line per protocol and one for the ceiling.
func Chart(results []bench.Result) []byte {
	var workloads, protocols []string
	var concs []int
	for _, r := range results {
		if !slices.Contains(workloads, r.Workload) {
			workloads = append(workloads, r.Workload)
		}
		if !slices.Contains(protocols, r.Protocol) {
			protocols = append(protocols, r.Protocol)
		}
		if !slices.Contains(concs, r.Concurrency) {
			concs = append(concs, r.Concurrency)
		}
	}
	slices.Sort(concs)
	width := 2*panelW + 3*chartPad
	height := legendH + len(workloads)*(panelH+chartPad) + chartPad
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	legend(&b, protocols)
	for i, workload := range workloads {
		y := legendH + i*(panelH+chartPad)
		rows := filter(results, func(r bench.Result) bool { return r.Workload == workload })
		panel(&b, chartPad, y, workload+": throughput (ops/s)", rows, protocols, concs, func(r bench.Result) float64 { return r.OpsPerSec })
		panel(&b, 2*chartPad+panelW, y, workload+": p99 latency (ms)", rows, protocols, concs, func(r bench.Result) float64 { return r.P99 })
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func legend(b *bytes.Buffer, protocols []string) {
	x := chartPad
	for _, p := range protocols {
		fmt.Fprintf(b, `<line x1="%d" y1="20" x2="%d" y2="20" %s/>`, x, x+24, stroke(p))
		label := p
		if p == bench.Ceiling {
			label = "pgx (raw ceiling)"
		}
		fmt.Fprintf(b, `<text x="%d" y="24">%s</text>`+"\n", x+30, html.EscapeString(label))
		x += 40 + 8*len(label)
	}
	fmt.Fprintf(b, `<text x="%d" y="24" fill="#666">x axis: concurrent clients</text>`+"\n", x+10)
}

func stroke(protocol string) string {
	s := fmt.Sprintf(`stroke="%s" stroke-width="2" fill="none"`, colors[protocol])
	if protocol == bench.Ceiling {
		s += ` stroke-dasharray="5 3"`
	}
	return s
}

// panel draws one plot with its top-left corner at (x, y).
func panel(b *bytes.Buffer, x, y int, title string, rows []bench.Result, protocols []string, concs []int, value func(bench.Result) float64) {
	left, top := float64(x+plotL), float64(y+plotT)
	w, h := float64(panelW-plotL-plotR), float64(panelH-plotT-plotB)
	top0 := niceMax(slices.Max(append([]float64{0}, mapRows(rows, value)...)))
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x+plotL, y+14, html.EscapeString(title))
	for i := range 5 {
		v := top0 * float64(i) / 4
		ty := top + h - h*float64(i)/4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, left, ty, left+w, ty)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, ty+4, short(v))
	}
	xOf := func(i int) float64 {
		if len(concs) == 1 {
			return left + w/2
		}
		return left + w*float64(i)/float64(len(concs)-1)
	}
	for i, c := range concs {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", xOf(i), top+h+16, c)
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", left, top, w, h)
	for _, p := range protocols {
		var pts []byte
		for i, c := range concs {
			if r, ok := find(rows, rows0(rows), p, c); ok {
				py := top + h - h*value(r)/top0
				pts = fmt.Appendf(pts, "%.1f,%.1f ", xOf(i), py)
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, xOf(i), py, colors[p])
			}
		}
		fmt.Fprintf(b, `<polyline points="%s" %s/>`+"\n", bytes.TrimSpace(pts), stroke(p))
	}
}

// rows0 is the workload all rows share.
func rows0(rows []bench.Result) string {
	if len(rows) == 0 {
		return ""
	}
	return rows[0].Workload
}

func mapRows(rows []bench.Result, value func(bench.Result) float64) []float64 {
	out := make([]float64, len(rows))
	for i, r := range rows {
		out[i] = value(r)
	}
	return out
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten (and never zero),
// so the axis ticks are round numbers.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 4, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// short formats an axis value compactly.
func short(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%gk", v/1000)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%g", math.Round(v*100)/100)
	}
}
