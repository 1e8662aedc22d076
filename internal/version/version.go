// Package version says which build of cacheservice is running, for traces
// (service.version) and for anything else that reports it. It reads what
// the Go toolchain records in the binary; a release build may set it
// explicitly instead:
//
//	go build -ldflags "-X github.com/cacheservice/cacheservice/internal/version.version=v1.2.3" ./cmd/cacheservice
package version

import (
	"runtime/debug"
	"sync"
)

// version, when set by -ldflags -X, wins over what the build recorded.
var version string

// String returns the build's version: the -ldflags value if set, else the
// main module's version (as `go install ...@v1.2.3` records it), else the
// VCS revision the binary was built from (with "-dirty" for uncommitted
// changes), else "devel".
var String = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	return fromBuild(version, info, ok)
})

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
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision == "" {
		return "devel"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if modified == "true" {
		revision += "-dirty"
	}
	return revision
}
