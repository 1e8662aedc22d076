package deploy_test

import (
	"slices"
	"strings"
	"testing"
)

// unit is a parsed systemd unit: directive name to values, in order.
type unit struct {
	file       string
	directives map[string][]string
}

func systemdUnit(t *testing.T) unit {
	t.Helper()
	u := unit{file: "systemd/cacheservice.service", directives: map[string][]string{}}
	lines, err := logicalLines(u.file, `\`)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, "="); ok {
			u.directives[k] = append(u.directives[k], v)
		}
	}
	return u
}

func (u unit) execStart() []string {
	var args []string
	for _, v := range u.directives["ExecStart"] {
		args = append(args, strings.Fields(v)...)
	}
	return args
}

// TestSystemdUnitIsHardened checks the unit runs unprivileged, keeps the embedded database in
// its state directory, restarts on failure, reads its environment file and reloads on SIGHUP.
func TestSystemdUnitIsHardened(t *testing.T) {
	t.Parallel()
	u := systemdUnit(t)
	want := map[string]string{
		"ProtectSystem":   "strict",
		"Restart":         "on-failure",
		"NoNewPrivileges": "yes",
		"PrivateTmp":      "yes",
		"ProtectHome":     "yes",
		"StateDirectory":  "cacheservice",
	}
	for k, v := range want {
		if got := u.directives[k]; !slices.Contains(got, v) {
			t.Errorf("%s: %s=%v, want %s", u.file, k, got, v)
		}
	}
	if user := u.directives["User"]; !slices.Contains(u.directives["DynamicUser"], "yes") && (len(user) == 0 || user[0] == "root") {
		t.Errorf("%s: neither DynamicUser=yes nor a User other than root", u.file)
	}
	if len(u.directives["EnvironmentFile"]) == 0 {
		t.Errorf("%s: no EnvironmentFile", u.file)
	}
	if got := u.directives["ExecReload"]; len(got) == 0 || !strings.Contains(got[0], "HUP") {
		t.Errorf("%s: ExecReload=%v, want a SIGHUP (re-reads the auth file and certificate)", u.file, got)
	}
	if caps := u.directives["CapabilityBoundingSet"]; len(caps) == 0 || caps[len(caps)-1] != "" {
		t.Errorf("%s: CapabilityBoundingSet=%v, want empty (no capability)", u.file, caps)
	}
	var dataDir string
	for _, use := range argFlags(u.file, u.execStart()) {
		if use.flag == "data-dir" {
			dataDir = use.value
		}
	}
	if stateDir := "/var/lib/" + u.directives["StateDirectory"][0]; !strings.HasPrefix(dataDir, stateDir+"/") {
		t.Errorf("%s: --data-dir=%q, want it inside the state directory %s (the only writable place)", u.file, dataDir, stateDir)
	}
}
