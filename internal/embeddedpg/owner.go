package embeddedpg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverUser is the account the binaries run as when we are root: PostgreSQL refuses to run as
// root, and Debian's packages create this user.
const serverUser = "postgres"

// account is the identity the PostgreSQL processes run under.
type account struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups, for the traversal check and the child's credentials
}

// lookupServerAccount returns the postgres account when running as root, and nil otherwise (the
// binaries then run as the current user, who owns Dir).
func lookupServerAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("look up user %q to run postgresql as (it refuses to run as root): %w", serverUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of user %q: %w", serverUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of user %q: %w", serverUser, err)
	}
	a := &account{uid: uint32(uid), gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("list groups of user %q: %w", serverUser, err)
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			a.groups = append(a.groups, uint32(n))
		}
	}
	return a, nil
}

// credential is what the child process runs with.
func (a *account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}

// ErrUnreachableDir is returned (wrapped) when the postgres user could not enter a parent of the
// directory: the common case is a checkout under /root (mode 0700) while running as root.
var ErrUnreachableDir = errors.New("unreachable for the postgres user")

// checkTraversable fails unless the account can search every ancestor of dir, which it needs to
// reach its data directory and socket. Ancestors that do not exist yet are skipped: Start creates
// them world-searchable. So it can run before anything is created, and a refused start leaves
// nothing behind. Only mode bits are checked (ACLs are not), which matches the common failure: a
// directory under /root, mode 0700.
func (a *account) checkTraversable(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != filepath.Dir(p) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check access to %s: %w", p, err)
		}
		if !a.canSearch(fi) {
			return fmt.Errorf("data directory %s is %w (PostgreSQL refuses to run as root, so it runs as that user): it cannot enter %s (mode %#o)",
				dir, ErrUnreachableDir, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func (a *account) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true // cannot tell; let PostgreSQL report it
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == a.uid:
		return perm&0o100 != 0
	case a.inGroup(st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func (a *account) inGroup(gid uint32) bool {
	if gid == a.gid {
		return true
	}
	for _, g := range a.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// chownTree gives root and everything below it to the account, skipping entries that already
// belong to it, so a cluster created or copied by root still starts. Symlinks are not followed.
func (a *account) chownTree(root string) error {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed under us, e.g. a socket lock file
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == a.uid && st.Gid == a.gid {
			return nil
		}
		return os.Lchown(path, int(a.uid), int(a.gid))
	})
	if err != nil {
		return fmt.Errorf("give %s to user %q: %w", root, serverUser, err)
	}
	return nil
}
