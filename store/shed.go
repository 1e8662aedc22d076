package store

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A connection's buffers grow to the largest message it moves and stay
// grown until its next statement: pgx reads a 1 MiB entry into a 2 MiB
// buffer, and keeps a 1 MiB Put's encoded value, until the connection is
// used again. An idle pool whose connections each moved one large entry (a
// burst of large Gets, as the slow-reader attack sends) so pinned up to
// three times the largest entry per connection, for as long as it stayed
// idle: 30 MiB for the default pool and 1 MiB entries.
//
// So a connection that moved more than shedAbove bytes at once runs one
// trivial statement before it goes back to the pool, which leaves pgx
// nothing that points into those buffers: they go back to pgx's pools and
// then to the collector. It costs a round trip, only after calls that
// moved a large entry, and off their path: the caller has its answer.
// Smaller messages grow a buffer to at most twice shedAbove, which stays.
const shedAbove = 64 << 10

// watchedConn is a connection to PostgreSQL that notices when pgx reads or
// writes more than shedAbove bytes at once: pgx reads into the whole of
// its read buffer, so a read that large means that buffer has grown.
type watchedConn struct {
	net.Conn
	grown atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	if len(p) > shedAbove {
		c.grown.Store(true)
	}
	return c.Conn.Read(p)
}

func (c *watchedConn) Write(p []byte) (int, error) {
	if len(p) > shedAbove {
		c.grown.Store(true)
	}
	return c.Conn.Write(p)
}

// watch is pgconn's AfterNetConnect: it wraps the connection pgx reads and
// writes (above TLS, so the sizes are pgx's own).
func watch(_ context.Context, _ *pgconn.Config, conn net.Conn) (net.Conn, error) {
	return &watchedConn{Conn: conn}, nil
}

// shedSQL selects shedWidth NULL parameters. pgx reuses, from statement to
// statement, the arrays that hold a connection's last row (32 columns)
// and parameters (64): only a statement wider than both leaves no slot
// pointing into the old buffers.
var shedSQL, shedArgs = func() (string, []any) {
	const shedWidth = 65
	cols := make([]string, shedWidth)
	for i := range cols {
		cols[i] = fmt.Sprintf("$%d::int4", i+1)
	}
	return "SELECT " + strings.Join(cols, ", "), make([]any, shedWidth)
}()

// release returns conn to the pool; a connection whose buffers grew sheds
// them first, on a goroutine of its own.
func (s *Store) release(conn *pgxpool.Conn) {
	if w, ok := conn.Conn().PgConn().Conn().(*watchedConn); !ok || !w.grown.Swap(false) || conn.Conn().IsClosed() {
		conn.Release()
		return
	}
	s.shed.Add(1)
	go func() {
		defer conn.Release()
		// The store's deadline: a connection this fails on is closed,
		// and Release discards it.
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		_, _ = conn.Exec(ctx, shedSQL, shedArgs...)
	}()
}
