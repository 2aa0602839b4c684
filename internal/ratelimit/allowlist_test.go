package ratelimit

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAllowlist(t *testing.T) {
	a, err := ParseAllowlist([]string{
		"203.0.113.7",
		"198.51.100.0/24",
		"198.51.101.0/24", // touches the one above: merged
		"10.0.0.0/8",
		"10.1.0.0/16", // inside the one above
		"2001:db8:1::/48",
		"2001:db8:ffff::1",
		"::ffff:192.0.2.0/120", // IPv4-mapped: 192.0.2.0/24
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.v4) != 4 || len(a.v6) != 2 {
		t.Errorf("spans: %d IPv4, %d IPv6; want 4 and 2 after merging", len(a.v4), len(a.v6))
	}
	tests := []struct {
		addr string
		want bool
	}{
		{"203.0.113.7", true},
		{"203.0.113.6", false},
		{"203.0.113.8", false},
		{"::ffff:203.0.113.7", true},
		{"198.51.100.0", true},
		{"198.51.101.255", true},
		{"198.51.102.0", false},
		{"198.51.99.255", false},
		{"10.255.255.255", true},
		{"11.0.0.0", false},
		{"9.255.255.255", false},
		{"192.0.2.200", true},
		{"192.0.3.0", false},
		{"2001:db8:1:ffff::1", true},
		{"2001:db8:2::", false},
		{"2001:db8:ffff::1", true},
		{"2001:db8:ffff::2", false},
		{"fe80::1%eth0", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"::", false},
	}
	for _, tt := range tests {
		if got := a.Contains(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Contains(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if a.Contains(netip.Addr{}) {
		t.Error("contains the zero Addr")
	}
	var none *Allowlist
	if none.Contains(netip.MustParseAddr("203.0.113.7")) || (&Allowlist{}).Contains(netip.MustParseAddr("::1")) {
		t.Error("an empty allowlist contains something")
	}
}

func TestAllowlistEverything(t *testing.T) {
	a := NewAllowlist(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("::/1"))
	for _, s := range []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "8000::"} {
		if !a.Contains(netip.MustParseAddr(s)) {
			t.Errorf("/0 does not contain %s", s)
		}
	}
	if len(a.v6) != 1 {
		t.Errorf("%d IPv6 spans, want 1", len(a.v6))
	}
}

func TestParseAllowlistErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"203.0.113.300", `"203.0.113.300": not an IP address or network; write it like`},
		{"example.com", `"example.com": not an IP address or network`},
		{"10.0.0.0/33", `"10.0.0.0/33": not an IP address or network`},
		{"10.0.0.1/8", `"10.0.0.1/8": host bits are set; did you mean 10.0.0.0/8?`},
		{"2001:db8::1/32", `did you mean 2001:db8::/32?`},
		{"fe80::1%eth0", `"fe80::1%eth0": not an IP address`},
	}
	for _, tt := range tests {
		_, err := ParseAllowlist([]string{"192.0.2.1", tt.in})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseAllowlist(%q): %v, want an error saying %q", tt.in, err, tt.want)
		}
	}
}
