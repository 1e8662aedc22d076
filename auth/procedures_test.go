package auth_test

import (
	"testing"

	"github.com/cacheservice/cacheservice/auth"
	"github.com/cacheservice/cacheservice/service"
)

// TestEveryMountedProcedureHasARole fails when an RPC is added to any
// service the edge mounts (ours or Flyte's) without a line in the access
// table: the interceptor would refuse it. An external test package, since
// service imports auth.
func TestEveryMountedProcedureHasARole(t *testing.T) {
	t.Parallel()
	procs := service.Procedures()
	if len(procs) < 10 {
		t.Fatalf("service.Procedures() = %v; want both services' RPCs", procs)
	}
	for _, proc := range procs {
		if _, ok := auth.RoleOf(proc); !ok {
			t.Errorf("%s has no role in procedureRoles", proc)
		}
	}
}
