package store

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
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

// dialedConn is a connection to PostgreSQL as dialled, below TLS if any:
// pgx keeps it (or the TLS connection over it) as the connection's
// net.Conn, where release finds it. It is not what pgx reads from: a
// connection over TLS must stay a *tls.Conn for pgx, which binds SCRAM
// authentication to the TLS channel only then.
type dialedConn struct {
	net.Conn
	grown atomic.Bool // pgx moved more than shedAbove bytes at once
}

// dialWatched wraps dial's connections (pgconn's DialFunc).
func dialWatched(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &dialedConn{Conn: c}, nil
	}
}

// dialedOf returns the dialled connection under c, or nil.
func dialedOf(c net.Conn) *dialedConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	d, _ := c.(*dialedConn)
	return d
}

// buildWatchedFrontend is pgconn's BuildFrontend: pgx's protocol reader and
// writer, above TLS, whose sizes are pgx's own buffers' (it reads into the
// whole of its read buffer, so a read that large means it has grown), note
// a large message on the dialled connection. w is the connection.
func buildWatchedFrontend(r io.Reader, w io.Writer) *pgproto3.Frontend {
	c, _ := w.(net.Conn)
	d := dialedOf(c)
	if d == nil {
		return pgproto3.NewFrontend(r, w)
	}
	return pgproto3.NewFrontend(sizeWatch{Reader: r, d: d}, sizeWatch{Writer: w, d: d})
}

// sizeWatch is a reader or a writer that sets d.grown on a call of more
// than shedAbove bytes.
type sizeWatch struct {
	io.Reader
	io.Writer
	d *dialedConn
}

func (s sizeWatch) Read(p []byte) (int, error) {
	if len(p) > shedAbove {
		s.d.grown.Store(true)
	}
	return s.Reader.Read(p)
}

func (s sizeWatch) Write(p []byte) (int, error) {
	if len(p) > shedAbove {
		s.d.grown.Store(true)
	}
	return s.Writer.Write(p)
}

// watch makes config's connections note large messages (see release).
func watch(config *pgconn.Config) {
	config.DialFunc = dialWatched(config.DialFunc)
	config.BuildFrontend = buildWatchedFrontend
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
// them first, on a goroutine of its own. One the pool is about to discard
// (closed, busy, or left in a transaction) is not worth the round trip.
func (s *Store) release(conn *pgxpool.Conn) {
	pg := conn.Conn().PgConn()
	d := dialedOf(pg.Conn())
	if d == nil || !d.grown.Swap(false) || pg.IsClosed() || pg.IsBusy() || pg.TxStatus() != 'I' {
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
