package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfileInstructions is deploy/Dockerfile as instructions, continuation lines joined.
type dockerfileInstructions []struct{ cmd, rest string }

func dockerfile(t *testing.T) dockerfileInstructions {
	t.Helper()
	lines, err := logicalLines("Dockerfile", `\`)
	if err != nil {
		t.Fatal(err)
	}
	var ins dockerfileInstructions
	for _, l := range lines {
		cmd, rest, _ := strings.Cut(l, " ")
		ins = append(ins, struct{ cmd, rest string }{strings.ToUpper(cmd), strings.TrimSpace(rest)})
	}
	return ins
}

// args returns ENTRYPOINT then CMD of the last stage, which must use the JSON (exec) form.
func (d dockerfileInstructions) args() []string {
	var entry, cmd []string
	for _, in := range d {
		var dst *[]string
		switch in.cmd {
		case "FROM":
			entry, cmd = nil, nil
			continue
		case "ENTRYPOINT":
			dst = &entry
		case "CMD":
			dst = &cmd
		default:
			continue
		}
		if err := json.Unmarshal([]byte(in.rest), dst); err != nil {
			*dst = []string{"<" + in.cmd + " not in JSON form: " + in.rest + ">"}
		}
	}
	return append(entry, cmd...)
}

// logicalLines reads a file dropping comments and blank lines, joining lines ending in cont.
func logicalLines(file, cont string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, cont); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	return lines, sc.Err()
}

// TestDockerfileBuildsStaticNonRootImage checks what cannot be run here (no container engine):
// a static, trimmed, version-stamped build, a distroless or scratch base, a non-root user, and
// EXPOSE naming the ports the default command listens on.
func TestDockerfileBuildsStaticNonRootImage(t *testing.T) {
	t.Parallel()
	d := dockerfile(t)
	var froms, exposed []string
	var user, build string
	for _, in := range d {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.rest)
			user, exposed = "", nil
		case "USER":
			user = in.rest
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.rest)...)
		case "RUN":
			if strings.Contains(in.rest, "go build") {
				build = in.rest
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("FROM lines %v: want a multi-stage build", froms)
	}
	if final := froms[len(froms)-1]; !strings.Contains(final, "distroless/static") && final != "scratch" {
		t.Errorf("final stage FROM %s: want distroless/static or scratch", final)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/cacheservice"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build line %q lacks %s", build, want)
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	flags := map[string]string{}
	for _, u := range argFlags("Dockerfile", d.args()) {
		flags[u.flag] = u.value
	}
	for _, f := range []string{"addr", "metrics-addr"} {
		p := portOf(t, flags[f])
		if !slices.Contains(exposed, strconv.Itoa(p)) && !slices.Contains(exposed, strconv.Itoa(p)+"/tcp") {
			t.Errorf("CMD listens with --%s=%s, but EXPOSE lists %v", f, flags[f], exposed)
		}
	}
}

// ldflagsRE finds the -ldflags="..." of the go build line.
var ldflagsRE = regexp.MustCompile(`-ldflags="([^"]*)"`)

// argRE finds ${NAME} references to build arguments.
var argRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// buildLdflags returns the -ldflags of deploy/Dockerfile's go build, with each ${ARG} replaced by
// args[ARG] when given, else by the ARG's default in the build stage: the test binary is stamped
// exactly as the image's is, so TestStampedBinaryReportsItsBuild proves the Dockerfile's -X
// targets are the variables internal/version reads.
func buildLdflags(args map[string]string) (string, error) {
	lines, err := logicalLines("Dockerfile", `\`)
	if err != nil {
		return "", err
	}
	defaults := map[string]string{}
	for _, l := range lines {
		cmd, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(cmd) {
		case "FROM":
			clear(defaults)
		case "ARG":
			name, value, _ := strings.Cut(strings.TrimSpace(rest), "=")
			defaults[name] = value
		case "RUN":
			if !strings.Contains(rest, "go build") {
				continue
			}
			m := ldflagsRE.FindStringSubmatch(rest)
			if m == nil {
				return "", fmt.Errorf("go build line %q has no -ldflags=\"...\"", rest)
			}
			var missing []string
			out := argRE.ReplaceAllStringFunc(m[1], func(ref string) string {
				name := argRE.FindStringSubmatch(ref)[1]
				if v, ok := args[name]; ok {
					return v
				}
				if v, ok := defaults[name]; ok {
					return v
				}
				missing = append(missing, name)
				return ref
			})
			if len(missing) > 0 {
				return "", fmt.Errorf("-ldflags uses build arguments %v that no ARG declares", missing)
			}
			return out, nil
		}
	}
	return "", fmt.Errorf("no RUN ... go build line in the Dockerfile")
}
