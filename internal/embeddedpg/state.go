package embeddedpg

// State is what an operator may want to see of the cluster, for metrics.
type State struct {
	// Running is true while the postmaster process is alive and its socket file exists, that is
	// while clients can reach it.
	Running bool
	// Starts counts the times the postmaster started and accepted
	// connections: the first start and every restart.
	Starts int64
	// UnexpectedExits counts the times it exited without being asked to
	// (a crash, or a kill from outside).
	UnexpectedExits int64
}

// State reports the cluster's current state.
func (s *Server) State() State {
	running := false
	if p := s.current(); p != nil {
		select {
		case <-p.done:
		default:
			running = s.socketPresent()
		}
	}
	return State{Running: running, Starts: s.starts.Load(), UnexpectedExits: s.unexpectedExits.Load()}
}
