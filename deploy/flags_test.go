package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// flagUse is one flag named by a deploy file.
type flagUse struct {
	file, flag, value string
}

// TestDeployFilesUseExistingFlags collects every flag the Kubernetes manifests (container args
// and CACHESERVICE_* variables), the systemd unit (ExecStart and the environment file example)
// and the Dockerfile (ENTRYPOINT and CMD) pass, and checks `cacheservice serve -help` lists it.
func TestDeployFilesUseExistingFlags(t *testing.T) {
	t.Parallel()
	have := serveFlags(t)
	var uses []flagUse
	for _, d := range deployments(t) {
		for _, c := range d.pod.Containers {
			uses = append(uses, argFlags(d.file, append(slices.Clone(c.Command), c.Args...))...)
			for _, e := range c.Env {
				if f, ok := envFlag(e.Name); ok {
					uses = append(uses, flagUse{file: d.file, flag: f})
				}
			}
		}
	}
	uses = append(uses, argFlags("Dockerfile", dockerfile(t).args())...)
	unit := systemdUnit(t)
	uses = append(uses, argFlags(unit.file, unit.execStart())...)
	uses = append(uses, envFileFlags(t, "systemd/cacheservice.env.example")...)

	if len(uses) < 10 {
		t.Fatalf("found only %d flag uses in the deploy files; the parsing is broken: %v", len(uses), uses)
	}
	for _, u := range uses {
		if !have[u.flag] {
			t.Errorf("%s uses --%s, which `cacheservice serve -help` does not list", u.file, u.flag)
		}
	}
}

// argFlags returns the flags among command-line arguments: "--name" or "--name=value".
func argFlags(file string, args []string) []flagUse {
	var uses []flagUse
	for i, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value = args[i+1]
		}
		uses = append(uses, flagUse{file: file, flag: name, value: value})
	}
	return uses
}

// envFlag maps a CACHESERVICE_* variable to its flag, as the server's environment fallback does.
func envFlag(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "CACHESERVICE_")
	if !ok {
		return "", false
	}
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-")), true
}

// envFileFlags reads an EnvironmentFile, commented-out examples included.
func envFileFlags(t *testing.T, file string) []flagUse {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var uses []flagUse
	for _, m := range regexp.MustCompile(`(?m)^#?(CACHESERVICE_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(data), -1) {
		f, _ := envFlag(m[1])
		uses = append(uses, flagUse{file: file, flag: f})
	}
	return uses
}
