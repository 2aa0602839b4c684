package maildns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestLookupMX(t *testing.T) {
	tests := []struct {
		name        string
		zone        []string
		rcodes      map[string]int
		truncateUDP bool
		domain      string
		want        []MX
		permanent   bool   // when an error is wanted: whether it is permanent
		err         string // a substring of the error; empty for none
	}{
		{
			name: "sorted by preference",
			zone: []string{
				"example.com. MX 20 mx2.example.com.",
				"example.com. MX 10 MX1.example.com.",
				"example.com. MX 30 mx3.example.net.",
			},
			want: []MX{{"mx1.example.com", 10}, {"mx2.example.com", 20}, {"mx3.example.net", 30}},
		},
		{
			name:   "name with trailing dot and capitals",
			zone:   []string{"example.com. MX 10 mx.example.com."},
			domain: "Example.COM.",
			want:   []MX{{"mx.example.com", 10}},
		},
		{
			name:        "over TCP after truncation",
			zone:        []string{"example.com. MX 10 mx.example.com."},
			truncateUDP: true,
			want:        []MX{{"mx.example.com", 10}},
		},
		{
			name: "implicit MX from an A record",
			zone: []string{"example.com. A 203.0.113.7", `example.com. TXT "v=spf1 a -all"`},
			want: []MX{{"example.com", 0}},
		},
		{
			name: "implicit MX from an AAAA record",
			zone: []string{"example.com. AAAA 2001:db8::7"},
			want: []MX{{"example.com", 0}},
		},
		{
			name: "null MX beside real ones",
			zone: []string{"example.com. MX 0 .", "example.com. MX 10 mx.example.com."},
			want: []MX{{"mx.example.com", 10}},
		},
		{
			name:      "null MX",
			zone:      []string{"example.com. MX 0 .", "example.com. A 203.0.113.7"},
			permanent: true, err: "null MX",
		},
		{
			name:      "NXDOMAIN",
			zone:      []string{"example.org. MX 10 mx.example.org."},
			permanent: true, err: "NXDOMAIN",
		},
		{
			name:      "no MX and no address",
			zone:      []string{`example.com. TXT "hello"`},
			permanent: true, err: "no MX record and no A or AAAA record",
		},
		{
			name:   "SERVFAIL",
			zone:   []string{"example.com. MX 10 mx.example.com."},
			rcodes: map[string]int{"*": dns.RcodeServerFailure},
			err:    "answered SERVFAIL",
		},
		{
			name:   "SERVFAIL for the implicit MX's address",
			zone:   []string{"example.com. A 203.0.113.7"},
			rcodes: map[string]int{"example.com. A": dns.RcodeServerFailure, "example.com. AAAA": dns.RcodeServerFailure},
			err:    "SERVFAIL",
		},
		{
			name:   "REFUSED",
			rcodes: map[string]int{"*": dns.RcodeRefused},
			err:    "answered REFUSED",
		},
		{
			name:      "not a domain name",
			domain:    "exa_mple.com",
			permanent: true, err: "not a domain name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &testDNS{rrs: zone(t, tt.zone...), rcodes: tt.rcodes, truncateUDP: tt.truncateUDP}
			domain := tt.domain
			if domain == "" {
				domain = "example.com"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := LookupMX(ctx, srv.start(t), domain)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("LookupMX = %v, want %v", got, tt.want)
				}
				return
			}
			var le *LookupError
			if !errors.As(err, &le) {
				t.Fatalf("LookupMX = %v, %v; want a *LookupError", got, err)
			}
			if le.Permanent != tt.permanent || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("LookupMX error %q, permanent %v; want one saying %q, permanent %v", err, le.Permanent, tt.err, tt.permanent)
			}
		})
	}
}

// TestLookupMXShuffles checks that exchangers of equal preference come in
// both orders, so that mail spreads over them.
func TestLookupMXShuffles(t *testing.T) {
	srv := &testDNS{rrs: zone(t,
		"example.com. MX 10 a.example.com.",
		"example.com. MX 10 b.example.com.",
		"example.com. MX 5 first.example.com.",
	)}
	addr := srv.start(t)
	seen := make(map[string]bool)
	for i := 0; i < 100 && len(seen) < 2; i++ {
		mxs, err := LookupMX(context.Background(), addr, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		if len(mxs) != 3 || mxs[0] != (MX{"first.example.com", 5}) {
			t.Fatalf("LookupMX = %v, want first.example.com first", mxs)
		}
		seen[mxs[1].Host] = true
	}
	if len(seen) != 2 {
		t.Errorf("in 100 lookups, equal preferences always came in the same order: %v", seen)
	}
}

func TestLookupMXTimeout(t *testing.T) {
	srv := &testDNS{rcodes: map[string]int{"*": drop}}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := LookupMX(ctx, srv.start(t), "example.com")
	var le *LookupError
	if !errors.As(err, &le) || le.Permanent || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LookupMX from a server that does not answer = %v, want a temporary error for the deadline", err)
	}
}

func TestLookupAddrs(t *testing.T) {
	v4 := netip.MustParseAddr("203.0.113.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	tests := []struct {
		name      string
		zone      []string
		rcodes    map[string]int
		want      []netip.Addr
		permanent bool
		err       string
	}{
		{
			name: "both families, IPv4 first",
			zone: []string{"mx.example.com. AAAA 2001:db8::7", "mx.example.com. A 203.0.113.7"},
			want: []netip.Addr{v4, v6},
		},
		{
			name: "IPv6 only",
			zone: []string{"mx.example.com. AAAA 2001:db8::7"},
			want: []netip.Addr{v6},
		},
		{
			name:   "AAAA failing, A answering",
			zone:   []string{"mx.example.com. A 203.0.113.7"},
			rcodes: map[string]int{"mx.example.com. AAAA": dns.RcodeServerFailure},
			want:   []netip.Addr{v4},
		},
		{
			name:      "NXDOMAIN",
			permanent: true, err: "NXDOMAIN",
		},
		{
			name:      "no addresses",
			zone:      []string{"mx.example.com. MX 10 mx.example.com."},
			permanent: true, err: "no A or AAAA record",
		},
		{
			name:   "SERVFAIL",
			rcodes: map[string]int{"*": dns.RcodeServerFailure},
			err:    "SERVFAIL",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &testDNS{rrs: zone(t, tt.zone...), rcodes: tt.rcodes}
			got, err := LookupAddrs(context.Background(), srv.start(t), "mx.example.com")
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("LookupAddrs = %v, want %v", got, tt.want)
				}
				return
			}
			var le *LookupError
			if !errors.As(err, &le) {
				t.Fatalf("LookupAddrs = %v, %v; want a *LookupError", got, err)
			}
			if le.Permanent != tt.permanent || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("LookupAddrs error %q, permanent %v; want one saying %q, permanent %v", err, le.Permanent, tt.err, tt.permanent)
			}
		})
	}
}

func TestLookupErrorUnwraps(t *testing.T) {
	srv := &testDNS{rrs: zone(t, "example.com. MX 0 .")}
	_, err := LookupMX(context.Background(), srv.start(t), "example.com")
	if !errors.Is(err, errNullMX) {
		t.Errorf("errors.Is(%v, errNullMX) = false", err)
	}
	if want := "looking up example.com: the domain accepts no mail (null MX, RFC 7505)"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}
