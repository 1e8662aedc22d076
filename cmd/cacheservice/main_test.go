package main

import (
	"os"
	"testing"

	"github.com/cacheservice/cacheservice/internal/pgtest"
	"github.com/cacheservice/cacheservice/store"
)

// execMainEnv makes the test binary run main() instead of the tests, so that
// process-level tests (signals, exit codes) run the real command without a
// separate build.
const execMainEnv = "CACHESERVICE_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		main()
		return
	}
	os.Exit(pgtest.Main(m, store.Migrate))
}
