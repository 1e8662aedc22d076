package embeddedpg

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned (wrapped) when no PostgreSQL server binaries can be found. Its text is
// the one line the server prints before exiting.
var ErrNoBinaries = errors.New("postgresql server binaries (postgres, initdb) not found: install them (e.g. apt-get install postgresql) or pass --database-url")

// debianBinGlob is where Debian and Ubuntu install each major version's server binaries; they are
// deliberately kept off PATH there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// FindBinaries returns the directory holding the postgres and initdb executables: the one on PATH,
// else the bindir reported by pg_config, else the newest /usr/lib/postgresql/*/bin.
func FindBinaries() (binDir string, err error) {
	return findBinaries(exec.LookPath, debianBinGlob)
}

// findBinaries is FindBinaries with its lookups injected, so the not-found path can be tested on a
// machine that has PostgreSQL installed.
func findBinaries(lookPath func(string) (string, error), glob string) (string, error) {
	if p, err := lookPath("postgres"); err == nil {
		// Follow a symlink (e.g. /usr/local/bin/postgres) to the install it belongs to, so that
		// postgres and initdb come from the same version.
		if real, err := filepath.EvalSymlinks(p); err == nil && hasServerBinaries(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if dir := filepath.Dir(p); hasServerBinaries(dir) {
			return dir, nil
		}
	}
	if p, err := lookPath("pg_config"); err == nil {
		// pg_config may come with the client libraries only; trust its answer only if the server
		// binaries are really there.
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			dir := strings.TrimSpace(string(out))
			if hasServerBinaries(dir) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob(glob) // the only possible error is a malformed pattern
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

// hasServerBinaries reports whether dir holds executable postgres and initdb files.
func hasServerBinaries(dir string) bool {
	for _, name := range []string{"postgres", "initdb"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf extracts the major version from .../postgresql/<version>/bin, comparing "9.6" below
// "10"; unparsable names sort last.
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}
