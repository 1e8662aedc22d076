package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium to drive; CI installs Debian's (.ci/run).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserScript calls Put from the page's origin with and without a bearer
// token and returns "status code" of each, or the fetch error.
const browserScript = `(async () => {
  const call = async (token) => {
    const headers = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"};
    if (token) headers["Authorization"] = "Bearer " + token;
    try {
      const r = await fetch(%q + "/cacheservice.v1.CacheService/Put", {method: "POST", headers,
        body: JSON.stringify({scope: {org: "acme", project: "browser", domain: "production"}, key: "k", output: {uri: "s3://b/k"}})});
      const body = await r.json();
      return r.status + " " + (body.code || "ok");
    } catch (e) {
      return "fetch failed: " + e;
    }
  };
  return [await call(%q), await call("")].join(",");
})()`

// TestBrowserCallsWithATokenThroughCORS loads a page from another origin in
// headless Chromium and calls the API with fetch: the preflight must allow
// the Authorization header, the call with the token is stored, and the one
// without is unauthenticated (and readable by the script).
func TestBrowserCallsWithATokenThroughCORS(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no chromium binary found (apt-get install -y chromium); .ci/run installs it so CI never skips this")
	}
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>cache client</title>")
	}))
	t.Cleanup(page.Close)
	s := startAuthServer(t, "--auth-file", writeAuthFile(t, testAuthFile("")), "--cors-allowed-origins", page.URL)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)

	if err := chromedp.Do(ctx, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("drive chromium to the page: %v", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(browserScript, s.url, writeToken), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("run the script in chromium: %v", err)
	}
	if want := "200 ok,401 unauthenticated"; got != want {
		t.Errorf("browser calls = %q, want %q", got, want)
	}
	var rows int
	if err := s.db.QueryRow(callCtx(t), `SELECT count(*) FROM cache_entries`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("%d entries stored, want the browser's one", rows)
	}
}
