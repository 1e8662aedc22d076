package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuild(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name     string
		override string
		info     *debug.BuildInfo
		ok       bool
		want     string
	}{
		{"ldflags wins", "v9.9.9", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"}}, true, "v9.9.9"},
		{"module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("0123456789abcdef", "false")}, true, "v1.2.3"},
		{"vcs revision", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123456789abcdef", "false")}, true, "0123456789ab"},
		{"dirty tree", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123456789abcdef", "true")}, true, "0123456789ab-dirty"},
		{"nothing recorded", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "devel"},
		{"no build info", "", nil, false, "devel"},
	}
	for _, tt := range tests {
		if got := fromBuild(tt.override, tt.info, tt.ok); got != tt.want {
			t.Errorf("%s: fromBuild = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestStringIsNeverEmpty(t *testing.T) {
	t.Parallel()
	if String() == "" {
		t.Fatal("String() is empty")
	}
}

func TestCommitFromBuild(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name     string
		override string
		info     *debug.BuildInfo
		ok       bool
		want     string
	}{
		{"ldflags wins", "abc123", &debug.BuildInfo{Settings: vcs("0123456789abcdef", "false")}, true, "abc123"},
		{"full vcs revision", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("0123456789abcdef", "false")}, true, "0123456789abcdef"},
		{"dirty tree", "", &debug.BuildInfo{Settings: vcs("0123456789abcdef", "true")}, true, "0123456789abcdef-dirty"},
		{"nothing recorded", "", &debug.BuildInfo{}, true, "unknown"},
		{"no build info", "", nil, false, "unknown"},
	}
	for _, tt := range tests {
		if got := commitFromBuild(tt.override, tt.info, tt.ok); got != tt.want {
			t.Errorf("%s: commitFromBuild = %q, want %q", tt.name, got, tt.want)
		}
	}
}
