package authfile

import "fmt"

// Role is what a grant allows. Roles are ordered: each includes the ones
// below it, so a check is one comparison.
type Role uint8

const (
	// RoleNone is no role: the zero value, never granted.
	RoleNone Role = iota
	// RoleRead allows Get and every read-only RPC.
	RoleRead
	// RoleWrite adds Put and the reservation RPCs.
	RoleWrite
	// RoleAdmin adds Delete and the bulk deletes.
	RoleAdmin
)

// String returns the role's name as the auth file spells it.
func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	default:
		return "none"
	}
}

// parseRole reads a role as the auth file spells it.
func parseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	default:
		return RoleNone, fmt.Errorf("unknown role %q (want read, write or admin)", s)
	}
}
