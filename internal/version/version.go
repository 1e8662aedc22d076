// Package version says which build of cacheservice is running: for
// `cacheservice version`, the cacheservice_build_info metric and traces
// (service.version). It is the one place a build is stamped. It reads what
// the Go toolchain records in the binary; a release build, whose build
// context may have no .git to read (a container build), sets both values
// explicitly instead:
//
//	go build -ldflags "-X github.com/cacheservice/cacheservice/internal/version.version=v1.2.3 \
//	  -X github.com/cacheservice/cacheservice/internal/version.commit=$(git rev-parse HEAD)" ./cmd/cacheservice
package version

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// version and commit, when set by -ldflags -X, win over what the build
// recorded.
var version, commit string

// String returns the build's version: the -ldflags value if set, else the
// main module's version (as `go install ...@v1.2.3` records it), else the
// VCS revision the binary was built from (with "-dirty" for uncommitted
// changes), else "devel".
var String = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	return fromBuild(version, info, ok)
})

// Commit returns the commit the binary was built from: the -ldflags value
// if set, else the full VCS revision the toolchain recorded (with "-dirty"
// for uncommitted changes), else "unknown".
var Commit = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	return commitFromBuild(commit, info, ok)
})

// GoVersion returns the Go toolchain the binary was built with, such as
// go1.26.0.
func GoVersion() string { return runtime.Version() }

// fromBuild is String's decision, apart from reading the binary.
func fromBuild(override string, info *debug.BuildInfo, ok bool) string {
	if override != "" {
		return override
	}
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	revision, dirty := vcs(info)
	if revision == "" {
		return "devel"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	return revision + dirty
}

// commitFromBuild is Commit's decision, apart from reading the binary.
func commitFromBuild(override string, info *debug.BuildInfo, ok bool) string {
	if override != "" {
		return override
	}
	if !ok {
		return "unknown"
	}
	revision, dirty := vcs(info)
	if revision == "" {
		return "unknown"
	}
	return revision + dirty
}

// vcs returns the recorded revision and "-dirty" when the tree had
// uncommitted changes.
func vcs(info *debug.BuildInfo) (revision, dirty string) {
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	return revision, dirty
}
