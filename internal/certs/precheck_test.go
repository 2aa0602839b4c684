package certs

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestPrecheck(t *testing.T) {
	notFound := &net.DNSError{Err: "no such host", Name: "app.example.com", IsNotFound: true}
	tests := []struct {
		name    string
		records []netip.Addr
		err     error
		server  []netip.Addr
		probeOK bool
		want    string // "" means the check passes
		wantNot string
		probed  bool
	}{
		{name: "points here", records: addrs("198.51.100.4"), server: addrs("198.51.100.4")},
		{name: "one of several points elsewhere", records: addrs("203.0.113.9", "198.51.100.4"), server: addrs("198.51.100.4"), probed: true,
			want: "but also to 203.0.113.9, which does not"},
		{name: "v4-mapped", records: addrs("::ffff:198.51.100.4"), server: addrs("198.51.100.4")},
		{name: "elsewhere", records: addrs("203.0.113.9"), server: addrs("198.51.100.4"), probed: true,
			want: "app.example.com resolves to 203.0.113.9 but this server is 198.51.100.4: create an A (or AAAA) record for app.example.com pointing to 198.51.100.4, or a CNAME to moat.example.com"},
		{name: "elsewhere but the probe reaches us (NAT)", records: addrs("203.0.113.9"), server: addrs("10.0.0.5"), probeOK: true, probed: true},
		{name: "unknown server address", records: addrs("203.0.113.9"), probed: true,
			want: "app.example.com resolves to 203.0.113.9, which does not reach this server", wantNot: "this server is"},
		{name: "cloudflare", records: addrs("104.16.1.1"), server: addrs("198.51.100.4"), probed: true,
			want: "Cloudflare's proxy (the orange cloud)"},
		{name: "cloudflare v6", records: addrs("2606:4700::1"), server: addrs("198.51.100.4"), probed: true, want: "DNS only (grey cloud) pointing to 198.51.100.4"},
		{name: "cloudflare proxy that passes challenges", records: addrs("104.16.1.1"), server: addrs("198.51.100.4"), probeOK: true, probed: true},
		{name: "loopback record, not this server's", records: addrs("127.0.0.1"), server: addrs("198.51.100.4"),
			want: "app.example.com resolves to 127.0.0.1 but this server is 198.51.100.4"},
		{name: "private record listed as this server", records: addrs("10.0.0.5"), server: addrs("10.0.0.5")},
		{name: "stale AAAA beside a good A", records: addrs("198.51.100.4", "2001:db8::1"), server: addrs("198.51.100.4"), probed: true,
			want: "app.example.com resolves to 198.51.100.4, which reaches this server, but also to 2001:db8::1, which does not: the CA may use any of them, so remove the record for 2001:db8::1 or point it to 198.51.100.4"},
		{name: "no such domain", err: notFound, server: addrs("198.51.100.4"), want: "app.example.com does not exist in DNS: create an A (or AAAA) record for app.example.com pointing to 198.51.100.4"},
		{name: "DNS failure", err: &net.DNSError{Err: "server misbehaving", Name: "app.example.com", IsTemporary: true}, server: addrs("198.51.100.4"), want: "looking up app.example.com failed"},
		{name: "no records", server: addrs("198.51.100.4"), want: "has no A or AAAA record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probed := false
			p := &precheck{
				lookup: func(context.Context, string) ([]netip.Addr, error) { return tt.records, tt.err },
				server: func() []netip.Addr { return tt.server },
				probe: func(context.Context, string, netip.Addr) bool {
					probed = true
					return tt.probeOK
				},
				serverName: "moat.example.com",
			}
			got := p.check(context.Background(), "app.example.com")
			if tt.want == "" && got != "" {
				t.Fatalf("check refused: %s", got)
			}
			if !strings.Contains(got, tt.want) || (tt.wantNot != "" && strings.Contains(got, tt.wantNot)) {
				t.Errorf("check = %q\nwant it to contain %q", got, tt.want)
			}
			if probed != tt.probed {
				t.Errorf("probed = %v, want %v", probed, tt.probed)
			}
		})
	}
}

func TestStatusString(t *testing.T) {
	tests := []struct {
		s    Status
		want string
	}{
		{Status{State: Issuing}, "issuing"},
		{Status{State: WaitingDNS, Message: "x resolves to y"}, "waiting-dns: x resolves to y"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
}

// The probe reaches the edge's handler and gets back the token only this
// moat knows; another server at the address does not pass.
func TestHTTPProbe(t *testing.T) {
	m, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ours := httptest.NewServer(m.HTTPHandler(http.NotFoundHandler()))
	defer ours.Close()
	theirs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.TrimPrefix(r.URL.Path, probePrefix)[:8])) // a server that echoes part of it
	}))
	defer theirs.Close()
	dial := (&net.Dialer{}).DialContext
	for _, tt := range []struct {
		srv  *httptest.Server
		want bool
	}{{ours, true}, {theirs, false}} {
		ap := netip.MustParseAddrPort(tt.srv.Listener.Addr().String())
		probe := httpProbe(fmt.Sprint(ap.Port()), dial, m.probeToken)
		if got := probe(context.Background(), "app.example.com", ap.Addr()); got != tt.want {
			t.Errorf("probe of %s = %v, want %v", tt.srv.URL, got, tt.want)
		}
	}
	if len(m.probes) != 0 {
		t.Errorf("%d probe tokens left after the probes", len(m.probes))
	}
}
