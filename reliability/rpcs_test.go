package reliability

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cacheservice/cacheservice/service"
)

// TestEveryRPCIsFuzzed fails when an RPC the edge serves escapes the hostile
// and fuzz suites: every procedure needs allowed codes, a fuzz target whose
// Fuzz function exists, and seeds for it, both in fuzzSeeds and committed
// in testdata/fuzz. Adding an RPC to the proto without them fails here.
func TestEveryRPCIsFuzzed(t *testing.T) {
	t.Parallel()
	served := service.Procedures()
	if len(served) == 0 {
		t.Fatal("the edge serves no procedures")
	}
	fuzzFuncs := fuzzFunctions(t)
	seeds := fuzzSeeds()
	for _, procedure := range served {
		if _, ok := allowedCodes[procedure]; !ok {
			t.Errorf("%s: no allowedCodes entry", procedure)
		}
		target, ok := fuzzTargets[procedure]
		if !ok {
			t.Errorf("%s: no fuzzTargets entry (and Fuzz function)", procedure)
			continue
		}
		if !slices.Contains(fuzzFuncs, target.name) {
			t.Errorf("%s: fuzz target %s is not declared as func %s(f *testing.F)", procedure, target.name, target.name)
		}
		if len(seeds[target.name]) == 0 {
			t.Errorf("%s: fuzzSeeds has no seeds for %s", procedure, target.name)
		}
		committed, err := filepath.Glob(filepath.Join("testdata", "fuzz", target.name, "seed-*"))
		if err != nil || len(committed) == 0 {
			t.Errorf("%s: no seeds committed in testdata/fuzz/%s (run %s=1 go test -run TestWriteFuzzSeeds ./reliability)",
				procedure, target.name, writeSeedsEnv)
		}
	}
	// The tables name only what is served, so a renamed RPC cannot leave a
	// stale entry behind that looks like coverage.
	for procedure := range fuzzTargets {
		if !slices.Contains(served, procedure) {
			t.Errorf("fuzzTargets has %s, which the edge does not serve", procedure)
		}
	}
	for procedure := range allowedCodes {
		if !slices.Contains(served, procedure) {
			t.Errorf("allowedCodes has %s, which the edge does not serve", procedure)
		}
	}
	for _, name := range fuzzFuncs {
		if !slices.ContainsFunc(served, func(p string) bool { return fuzzTargets[p].name == name }) {
			t.Errorf("%s fuzzes no served procedure", name)
		}
	}
}

// fuzzFunctions returns the names of the package's Fuzz functions.
func fuzzFunctions(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, file, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Fuzz") {
				names = append(names, fn.Name.Name)
			}
		}
	}
	return names
}
