package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
)

// Interceptor returns the Connect interceptor that authenticates and
// authorizes every unary call before its handler runs, so no handler can
// forget it and a refused call never reaches the database. Mount it on the
// API services only (ours and Flyte's), outside the validation interceptor,
// so that a caller without credentials learns nothing, not even which of
// its fields are malformed. Health and reflection are mounted without it.
func (a *Authenticator) Interceptor() connect.Interceptor {
	return interceptor{a: a}
}

type interceptor struct{ a *Authenticator }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		procedure := req.Spec().Procedure
		p, scope, role, err := i.a.check(ctx, procedure, req.Header(), req.Peer().Addr, tlsState(ctx), req.Any())
		if err != nil {
			return nil, err
		}
		ctx = context.WithValue(ctx, principalKey{}, p)
		if role < RoleAdmin {
			return next(ctx, req)
		}
		res, err := next(ctx, req)
		i.a.audit(ctx, p, procedure, scope, true, err)
		return res, err
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler lets streams through (health's Watch, reflection),
// except a stream on a procedure of the access table: the API has none, and
// if one is ever added it must be refused until this checks it.
func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if _, ok := RoleOf(conn.Spec().Procedure); ok {
			i.a.stats.denied.Add(1)
			return connect.NewError(connect.CodePermissionDenied, errors.New("streaming calls are not authorized by this server"))
		}
		return next(ctx, conn)
	}
}

var (
	errUnknownProcedure = errors.New("procedure is not covered by the access rules")
	errNoScope          = errors.New("request names no org, project and domain")
)

// check is the whole decision for one call: who the caller is (or
// unauthenticated), what the procedure needs, and whether a grant gives it
// on the request's scope (or permission_denied). It allocates nothing when
// the call is allowed with a static token or a cached JWT.
func (a *Authenticator) check(ctx context.Context, procedure string, header http.Header, peer string, state *tls.ConnectionState, msg any) (*Principal, Scope, Role, error) {
	p, why := a.authenticate(ctx, header, peer, state)
	if why != reasonNone {
		a.stats.failures[why].Add(1)
		a.log.DebugContext(ctx, "authentication failed", "procedure", procedure, "reason", reasonNames[why], "peer", peer)
		code := connect.CodeUnauthenticated
		if why == reasonIssuerUnavailable {
			code = connect.CodeUnavailable // retryable: the caller did nothing wrong
		}
		return nil, Scope{}, RoleNone, connect.NewError(code, reasonMessages[why])
	}
	role, ok := RoleOf(procedure)
	if !ok {
		a.stats.denied.Add(1)
		return nil, Scope{}, RoleNone, connect.NewError(connect.CodePermissionDenied, errUnknownProcedure)
	}
	scope, ok := scopeOf(msg)
	if !ok {
		a.stats.denied.Add(1)
		return nil, Scope{}, RoleNone, connect.NewError(connect.CodePermissionDenied, errNoScope)
	}
	if !p.Allows(scope, role) {
		a.stats.denied.Add(1)
		if role == RoleAdmin {
			a.audit(ctx, p, procedure, scope, false, nil)
		}
		// Only what the caller itself sent and its own name: nothing about
		// other principals or scopes.
		return nil, Scope{}, RoleNone, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"principal %q has no %s grant for org %q, project %q, domain %q", p.Name, role, scope.Org, scope.Project, scope.Domain))
	}
	return p, scope, role, nil
}

// audit logs one line per delete (allowed or refused): who, on what, and how
// it ended. The handler of a bulk delete logs its count itself.
func (a *Authenticator) audit(ctx context.Context, p *Principal, procedure string, s Scope, allowed bool, err error) {
	code := "ok"
	if !allowed {
		code = connect.CodePermissionDenied.String()
	} else if err != nil {
		code = connect.CodeOf(err).String()
	}
	a.log.InfoContext(ctx, "audit",
		"principal", p.Name, "procedure", procedure,
		"org", s.Org, "project", s.Project, "domain", s.Domain,
		"allowed", allowed, "code", code)
}

type principalKey struct{}

// PrincipalFrom returns the principal the interceptor authenticated, for a
// handler's own audit line (a bulk delete's count).
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

type tlsKey struct{}

// Middleware carries the request's TLS state into its context, where the
// interceptor finds the client certificate (Connect gives interceptors the
// peer's address but not the *http.Request). Wrap the API services'
// handlers with it; without it mTLS identities are never seen.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			r = r.WithContext(context.WithValue(r.Context(), tlsKey{}, r.TLS))
		}
		next.ServeHTTP(w, r)
	})
}

func tlsState(ctx context.Context) *tls.ConnectionState {
	s, _ := ctx.Value(tlsKey{}).(*tls.ConnectionState)
	return s
}
