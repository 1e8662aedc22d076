// Package metricstest reads a Prometheus /metrics endpoint for tests, so that
// they can check that a metric moved. It is for tests only.
package metricstest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples are the values of one scrape, keyed by Key.
type Samples map[string]float64

// Key names a sample: the metric name, then its labels sorted by name, as in
// cacheservice_rpc_requests_total{code="ok",procedure="/p"}. Histograms give
// name_count and name_sum.
func Key(name string, labels ...string) string {
	if len(labels)%2 != 0 {
		panic("metricstest: labels must come in name, value pairs")
	}
	var pairs []string
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// Get returns the value of a sample; a missing one fails the test.
func (s Samples) Get(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s[Key(name, labels...)]
	if !ok {
		t.Fatalf("no sample %s in the scrape", Key(name, labels...))
	}
	return v
}

// Scrape fetches url and parses the text exposition format.
func Scrape(t testing.TB, url string) Samples {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %s", url, res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", url, err)
	}
	samples := Samples{}
	for name, family := range families {
		for _, m := range family.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName(), l.GetValue())
			}
			switch family.GetType() {
			case dto.MetricType_COUNTER:
				samples[Key(name, labels...)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				samples[Key(name, labels...)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				samples[Key(name, labels...)] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				samples[Key(name+"_count", labels...)] = float64(m.GetHistogram().GetSampleCount())
				samples[Key(name+"_sum", labels...)] = m.GetHistogram().GetSampleSum()
			case dto.MetricType_SUMMARY:
				samples[Key(name+"_count", labels...)] = float64(m.GetSummary().GetSampleCount())
				samples[Key(name+"_sum", labels...)] = m.GetSummary().GetSampleSum()
			}
		}
	}
	return samples
}
