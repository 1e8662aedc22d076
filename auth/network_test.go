package auth

import (
	"net"
	"net/http"
	"net/netip"
	"testing"

	"connectrpc.com/connect"
)

// networkFile adds principals matched by network to baseFile: the loopback
// addresses 127.0.0.4 to 127.0.0.7 stand for an executor's pods, and
// 10.42.0.0/16 for pods behind a proxy.
func networkFile() string {
	return baseFile() + `  - name: executor
    networks: [127.0.0.4/30]
    grants: [{org: acme, project: "*", domain: "*", role: write}]
  - name: proxied-pods
    networks: [10.42.0.0/16]
    grants: [{org: acme, project: "*", domain: "*", role: read}]
`
}

func TestNetworkPrincipals(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, networkFile(), nil)
	url, rec := startServer(t, a, nil)
	get, put := rpcs[0], rpcs[1]
	executorIP, strangerIP := net.IPv4(127, 0, 0, 5), net.IPv4(127, 0, 0, 9)

	cases := []struct {
		name string
		from net.IP
		h    http.Header
		r    rpc
		want connect.Code
		who  string
	}{
		{"granted network, no credentials", executorIP, http.Header{}, put, 0, "executor"},
		{"other address, no credentials", strangerIP, http.Header{}, get, connect.CodeUnauthenticated, ""},
		{"granted network, invalid token", executorIP, bearer("wrong"), get, connect.CodeUnauthenticated, ""},
		{"granted network, malformed header", executorIP, http.Header{"Authorization": []string{"Bearer"}}, get, connect.CodeUnauthenticated, ""},
		// A valid token decides over the network: the reader may not Put
		// although its address could.
		{"granted network, reader's token", executorIP, bearer(readToken), put, connect.CodePermissionDenied, ""},
		{"granted network, beyond its role", executorIP, http.Header{}, rpcs[4], connect.CodePermissionDenied, ""},
		// No proxy is trusted: a forwarded header is ignored.
		{"forwarded header, untrusted peer", strangerIP, http.Header{"X-Forwarded-For": []string{"10.42.0.7"}}, get, connect.CodeUnauthenticated, ""},
		{"forwarded header from a granted peer", executorIP, http.Header{"X-Forwarded-For": []string{"192.0.2.1"}}, put, 0, "executor"},
	}
	for _, kind := range clientKinds {
		for _, c := range cases {
			name := kind.name + "/" + c.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				client := newClient(t, url, kind.grpc, c.from, nil)
				expectCall(t, rec, client, c.r, name, c.h, c.want, c.who)
			})
		}
	}
}

func TestTrustedProxyForwardsTheClientAddress(t *testing.T) {
	t.Parallel()
	a, _ := newAuthenticator(t, networkFile(), func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/24")}
	})
	url, rec := startServer(t, a, nil)
	get, put := rpcs[0], rpcs[1]
	proxyIP, otherIP := net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 9)
	xff := func(v ...string) http.Header { return http.Header{"X-Forwarded-For": v} }

	cases := []struct {
		name string
		from net.IP
		h    http.Header
		r    rpc
		want connect.Code
	}{
		{"client behind the proxy", proxyIP, xff("10.42.0.7"), get, 0},
		{"its grant still bounds it", proxyIP, xff("10.42.0.7"), put, connect.CodePermissionDenied},
		{"through two trusted proxies", proxyIP, xff("10.42.0.7, 10.0.0.3"), get, 0},
		{"header split over lines", proxyIP, xff("10.42.0.7", "10.0.0.3"), get, 0},
		{"entries left of the client's are not read", proxyIP, xff("192.0.2.1, 10.42.0.7, 10.0.0.3"), get, 0},
		// The client forged the leftmost entry; the proxy appended the real one.
		{"forged entry left of the real one", proxyIP, xff("10.42.0.7, 192.0.2.1"), get, connect.CodeUnauthenticated},
		{"garbled header", proxyIP, xff("10.42.0.7, not-an-ip"), get, connect.CodeUnauthenticated},
		{"no header: the proxy itself", proxyIP, http.Header{}, get, connect.CodeUnauthenticated},
		{"header from a peer that is no proxy", otherIP, xff("10.42.0.7"), get, connect.CodeUnauthenticated},
		{"invalid token from a granted client", proxyIP, http.Header{"X-Forwarded-For": {"10.42.0.7"}, "Authorization": {"Bearer wrong"}}, get, connect.CodeUnauthenticated},
	}
	for _, kind := range clientKinds {
		for _, c := range cases {
			name := kind.name + "/" + c.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				client := newClient(t, url, kind.grpc, c.from, nil)
				expectCall(t, rec, client, c.r, name, c.h, c.want, "proxied-pods")
			})
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	got, err := ParsePrefixes(" 10.0.0.0/8, 192.0.2.7 ,,::1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "::1/128", "fd00::/8"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("[%d] = %s, want %s", i, got[i], want[i])
		}
	}
	if none, err := ParsePrefixes(""); err != nil || len(none) != 0 {
		t.Errorf("empty: %v, %v", none, err)
	}
	for _, bad := range []string{"10.0.0.1/8", "10.0.0.0/33", "proxy.local"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
