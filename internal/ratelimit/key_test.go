package ratelimit

import (
	"net/netip"
	"testing"
)

func TestKeyFor(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		prefix int
		same   bool
	}{
		{"same IPv4", "203.0.113.7", "203.0.113.7", 64, true},
		{"neighbouring IPv4 addresses", "203.0.113.7", "203.0.113.8", 64, false},
		{"IPv4-mapped is IPv4", "::ffff:203.0.113.7", "203.0.113.7", 64, true},
		{"IPv4 ignores the IPv6 prefix", "203.0.113.7", "203.0.113.8", 8, false},
		{"one /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64, true},
		{"neighbouring /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", 64, false},
		{"zone ignored", "fe80::1%eth0", "fe80::2", 64, true},
		{"0 means /64", "2001:db8:1:2::1", "2001:db8:1:2::2", 0, true},
		{"out of range means /64", "2001:db8:1:2::1", "2001:db8:1:3::1", 129, false},
		{"one /56", "2001:db8:1:200::1", "2001:db8:1:2ff:1::1", 56, true},
		{"neighbouring /56s", "2001:db8:1:200::1", "2001:db8:1:300::1", 56, false},
		{"/128 counts each address", "2001:db8::1", "2001:db8::2", 128, false},
		{"/96", "2001:db8::1:1", "2001:db8::1:2", 96, true},
		{"/96 boundary", "2001:db8::1:0:1", "2001:db8::2:0:1", 96, false},
		{"/3", "2001:db8::1", "3fff::1", 3, true},
		{"IPv4 is not the IPv6 prefix it maps into", "0.0.0.1", "::1", 64, false},
	}
	for _, tt := range tests {
		a := KeyFor(0, netip.MustParseAddr(tt.a), tt.prefix)
		b := KeyFor(0, netip.MustParseAddr(tt.b), tt.prefix)
		if (a == b) != tt.same {
			t.Errorf("%s: KeyFor(%s) = %v, KeyFor(%s) = %v, same = %v, want %v", tt.name, tt.a, a, tt.b, b, a == b, tt.same)
		}
	}
}

func TestKeyScopeAndString(t *testing.T) {
	addr := netip.MustParseAddr("2001:db8:1:2:3:4:5:6")
	if KeyFor(1, addr, 64) == KeyFor(2, addr, 64) {
		t.Error("different scopes share a key")
	}
	k := KeyFor(3, addr, 64)
	if k.Scope() != 3 || k.Addr() != netip.MustParseAddr("2001:db8:1:2::") {
		t.Errorf("key = scope %d addr %v", k.Scope(), k.Addr())
	}
	for _, tt := range []struct {
		k    Key
		want string
	}{
		{k, "3/2001:db8:1:2::"},
		{KeyFor(0, netip.MustParseAddr("::ffff:203.0.113.7"), 64), "203.0.113.7"},
		{KeyFor(0, netip.Addr{}, 64), "invalid IP"},
	} {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	if KeyFor(0, netip.Addr{}, 64) == KeyFor(0, netip.MustParseAddr("::"), 64) {
		t.Error("the zero Addr shares a bucket with ::")
	}
}

func TestCheckV6Prefix(t *testing.T) {
	for _, bits := range []int{1, 48, 56, 64, 128} {
		if err := CheckV6Prefix(bits); err != nil {
			t.Errorf("CheckV6Prefix(%d): %v", bits, err)
		}
	}
	for _, bits := range []int{-1, 0, 129} {
		if err := CheckV6Prefix(bits); err == nil {
			t.Errorf("CheckV6Prefix(%d): no error", bits)
		}
	}
}

// TestShardSpread checks that consecutive clients of one network, what a
// flood from one provider looks like, spread evenly over the shards.
func TestShardSpread(t *testing.T) {
	m := NewMemory(0)
	const n = shards * 100
	for _, family := range []string{"ipv4", "ipv6"} {
		var count [shards]int
		for i := range n {
			addr := v4(0x0a000000 + uint32(i))
			if family == "ipv6" {
				addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(i >> 24), 5: byte(i >> 16), 6: byte(i >> 8), 7: byte(i), 15: 1})
			}
			count[KeyFor(0, addr, 64).hash(m.seed)>>m.shift]++
		}
		for i, c := range count {
			if c < 50 || c > 150 {
				t.Fatalf("%s: shard %d got %d of %d keys; want about %d", family, i, c, n, n/shards)
			}
		}
	}
}
