// Package otlptest is an OTLP/HTTP trace receiver on loopback for tests: it
// decodes the export requests it is sent and keeps their spans. It is for
// tests only.
package otlptest

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver keeps the spans posted to it.
type Receiver struct {
	// URL is the receiver's base URL, to use as an OTLP endpoint.
	URL string

	mu        sync.Mutex
	spans     []*tracepb.Span
	resources []*resourcepb.Resource // of each span
	paths     []string
}

// NewReceiver starts a receiver, closed at cleanup.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	var export coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(data, &export)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.paths = append(r.paths, req.URL.Path)
	for _, rs := range export.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, span := range ss.GetSpans() {
				r.spans = append(r.spans, span)
				r.resources = append(r.resources, rs.GetResource())
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Span returns the first span received with the given name, or nil.
func (r *Receiver) Span(name string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// ResourceAttribute returns the string value of the attribute key of the
// resource that sent the first span named name, or "".
func (r *Receiver) ResourceAttribute(name, key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.spans {
		if s.GetName() != name {
			continue
		}
		for _, kv := range r.resources[i].GetAttributes() {
			if kv.GetKey() == key {
				return kv.GetValue().GetStringValue()
			}
		}
		return ""
	}
	return ""
}

// Paths returns the URL paths of the export requests received.
func (r *Receiver) Paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}
