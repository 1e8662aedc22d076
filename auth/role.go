package auth

import (
	"github.com/cacheservice/cacheservice/auth/authfile"
	"github.com/cacheservice/cacheservice/gen/cacheservice/v1/cachev1connect"
	"github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice/v2/flytecachev2connect"
)

// Role, Scope and Principal are the auth file's; aliases keep callers of
// this package to one import.
type (
	Role      = authfile.Role
	Scope     = authfile.Scope
	Principal = authfile.Principal
)

// The roles, lowest first; each includes the ones below it.
const (
	RoleNone  = authfile.RoleNone
	RoleRead  = authfile.RoleRead
	RoleWrite = authfile.RoleWrite
	RoleAdmin = authfile.RoleAdmin
)

// procedureRoles is the one table of who may call what. Every procedure the
// server mounts behind the interceptor must be here; one that is not is
// refused, and TestEveryMountedProcedureHasARole fails. Names of
// RPCs that DESIGN.md announces but that are not generated yet are listed so
// that they are covered the moment they appear.
var procedureRoles = map[string]Role{
	cachev1connect.CacheServiceGetProcedure:                    RoleRead,
	"/cacheservice.v1.CacheService/BatchGet":                   RoleRead,
	"/cacheservice.v1.CacheService/ListEntries":                RoleRead,
	"/cacheservice.v1.CacheService/ListReservations":           RoleRead,
	cachev1connect.CacheServicePutProcedure:                    RoleWrite,
	cachev1connect.CacheServiceGetOrExtendReservationProcedure: RoleWrite,
	cachev1connect.CacheServiceReleaseReservationProcedure:     RoleWrite,
	cachev1connect.CacheServiceDeleteProcedure:                 RoleAdmin,
	"/cacheservice.v1.CacheService/DeleteEntries":              RoleAdmin,

	flytecachev2connect.CacheServiceGetProcedure:                    RoleRead,
	flytecachev2connect.CacheServicePutProcedure:                    RoleWrite,
	flytecachev2connect.CacheServiceGetOrExtendReservationProcedure: RoleWrite,
	flytecachev2connect.CacheServiceReleaseReservationProcedure:     RoleWrite,
	flytecachev2connect.CacheServiceDeleteProcedure:                 RoleAdmin,
}

// RoleOf returns the role a procedure (its full name, as in
// "/cacheservice.v1.CacheService/Get") needs, and false for a procedure the
// table does not know, which the interceptor refuses. Tests of the HTTP edge
// use it to check that every mounted procedure is covered.
func RoleOf(procedure string) (Role, bool) {
	r, ok := procedureRoles[procedure]
	return r, ok
}
