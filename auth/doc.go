// Package auth decides who calls the API and what they may do: it
// authenticates each call (a static bearer token, an OIDC/JWT bearer token, a
// verified mTLS client certificate, or the caller's network), and authorizes
// it against the grants of the auth file for the procedure's role and the
// request's scope, in one Connect interceptor, before any handler runs (the
// README's "Security" section is the operator's view).
//
// It owns how credentials are verified, the auth file's reloading (package
// authfile parses it), the procedure-to-role table and the audit line of
// deletes. It must not reach the manager or the store: a
// refused call touches nothing, and a caller learns nothing about scopes it
// may not see.
//
// # The auth file
//
// YAML (--auth-file). Unknown fields are refused, and every error names its
// line and field. The file holds no secret: a token appears only as the hex
// SHA-256 of its bytes (`printf %s "$TOKEN" | sha256sum`).
//
//	principals:
//	  - name: ci-workers                 # unique; shown in logs and audit lines
//	    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	    grants:
//	      - {org: acme, project: "*", domain: "*", role: write}
//	  - name: flyte-executor             # sends no credentials: matched by network
//	    networks: [10.42.0.0/16, "fd00:42::/64"]
//	    grants: [{org: acme, project: "*", domain: production, role: write}]
//	  - name: ml-worker                  # mTLS: a URI SAN (SPIFFE ID), else the subject CN
//	    mtls_identities: ["spiffe://cluster.local/ns/ml/sa/worker"]
//	    grants: [{org: acme, project: ml, domain: "*", role: read}]
//	  - name: k8s-builder                # OIDC: the value of --oidc-claim (default sub)
//	    oidc_identities: ["system:serviceaccount:build:builder"]
//	    grants: [{org: acme, project: "*", domain: "*", role: admin}]
//
// A principal needs at least one of token_sha256, networks, mtls_identities,
// oidc_identities; it may have several. A grant is (org, project, domain,
// role): org names one org, project and domain may be "*". Roles are read
// (Get and every read-only RPC) < write (read plus Put and the reservation
// RPCs) < admin (write plus Delete and the bulk deletes). Tokens, networks
// and identities may not repeat across principals; when networks overlap the
// most specific one wins. An empty file or an empty principals list is
// refused.
//
// # Deciding who calls
//
// Presented credentials decide, and nothing falls through: a call with an
// Authorization header is judged by its bearer token alone (a listed static
// token, compared in constant time by SHA-256, else a JWT verified against
// the issuer's keys and its audience, cached until it expires); else a
// client certificate that the TLS handshake verified names the principal;
// else the TCP peer's address is matched against networks. X-Forwarded-For
// is believed only when the peer is in TrustedProxies. A caller that none of
// these identify is unauthenticated, and so is an invalid token from a
// granted network. Failures are counted by reason (Collector), never logged
// with the token.
//
// # Reloading
//
// Reload re-reads the file (cmd calls it on SIGHUP), and Watch calls it when
// the file's directory changes. A file that fails to parse leaves the
// previous one in force, logged and counted.
package auth
