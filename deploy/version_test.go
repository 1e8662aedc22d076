package deploy_test

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestStampedBinaryReportsItsBuild runs `cacheservice version` on the binary stamped with the
// Dockerfile's -ldflags: it exits 0 and prints the VERSION and COMMIT build arguments and the Go
// version. (TestStaticBinaryServesInEmptyRoot checks cacheservice_build_info says the same.)
func TestStampedBinaryReportsItsBuild(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary(t), "version").Output()
	if err != nil {
		t.Fatalf("cacheservice version: %v", err)
	}
	want := "version:   " + testVersion + "\ncommit:    " + testCommit + "\ngoversion: " + runtime.Version() + "\n"
	if string(out) != want {
		t.Errorf("cacheservice version printed\n%s\nwant\n%s", out, want)
	}
}

// buildInfoLine is the exposition line of cacheservice_build_info for the stamped test binary.
func buildInfoLine() string {
	return `cacheservice_build_info{commit="` + testCommit + `",goversion="` + runtime.Version() +
		`",version="` + testVersion + `"} 1`
}

// hasLine reports whether text has line as one of its lines.
func hasLine(text, line string) bool {
	for l := range strings.Lines(text) {
		if strings.TrimRight(l, "\n") == line {
			return true
		}
	}
	return false
}
