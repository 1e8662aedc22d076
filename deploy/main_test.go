package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/cacheservice/cacheservice/internal/pgtest"
)

// buildDir holds the binary built once for every test of the package.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	// No prepare function: the server under test migrates its own database, as in production.
	code := pgtest.Main(m, nil)
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// testVersion and testCommit are stamped into the test binary with deploy/Dockerfile's own
// -ldflags, as its VERSION and COMMIT build arguments.
const (
	testVersion = "v0.0.0-deploytest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// binary builds ./cmd/cacheservice as deploy/Dockerfile does (CGO off, the Dockerfile's
// -ldflags with testVersion and testCommit) and returns its path. It leaves out the Dockerfile's -trimpath: that flag changes the
// cache key of every package, so the test would compile the whole dependency tree a second time
// (about two minutes of CPU here) for paths inside the binary that nothing here checks.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildPath = filepath.Join(buildDir, "cacheservice")
		ldflags, err := buildLdflags(map[string]string{"VERSION": testVersion, "COMMIT": testCommit})
		if err != nil {
			buildErr = fmt.Errorf("read the Dockerfile's -ldflags: %w", err)
			return
		}
		cmd := exec.Command("go", "build", "-ldflags="+ldflags, "-o", buildPath, "./cmd/cacheservice")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cacheservice: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// helpFlag matches a flag in the flag package's -help output: "  -name type".
var helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`)

// serveFlags returns the flags `cacheservice serve -help` lists.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(binary(t), "serve", "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("cacheservice serve -help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["addr"] || !flags["database-url"] {
		t.Fatalf("cacheservice serve -help lists %d flags, without --addr or --database-url: unexpected format\n%s", len(flags), out)
	}
	return flags
}
