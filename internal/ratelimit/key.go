package ratelimit

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// DefaultV6Prefix is how many leading bits of an IPv6 address identify one
// client. A /64 is the smallest subnet a provider hands out, so anyone who
// controls one address usually controls all 2^64 of its neighbours;
// counting them apart would let him rotate past any limit.
const DefaultV6Prefix = 64

// Key identifies one bucket: a client (an IPv4 address or an IPv6 prefix)
// within a scope. It is a small comparable value, fit for a map key.
// Build it with KeyFor.
type Key struct {
	// scope separates buckets of the same client: 0 for the edge-wide
	// limit, an app's number for a per-app one.
	scope uint32
	// addr is the IPv4 address in its IPv4-mapped IPv6 form, or the IPv6
	// address with the bits past the prefix cleared.
	addr [16]byte
}

// KeyFor returns the bucket of a client address in a scope. An IPv4
// address (also one written IPv4-mapped, ::ffff:a.b.c.d) counts on its
// own; an IPv6 address is cut to its first v6Prefix bits, so that every
// address of one /64 (by default) shares a bucket. A v6Prefix outside
// 1..128 means DefaultV6Prefix. The zero Addr gets a bucket of its own,
// shared by every caller that has no address; the edge never has one.
func KeyFor(scope uint32, addr netip.Addr, v6Prefix int) Key {
	k := Key{scope: scope}
	addr = addr.Unmap()
	if !addr.IsValid() {
		k.addr = noAddr
		return k
	}
	k.addr = addr.As16()
	if addr.Is4() {
		return k
	}
	if v6Prefix < 1 || v6Prefix > 128 {
		v6Prefix = DefaultV6Prefix
	}
	hi := binary.BigEndian.Uint64(k.addr[:8])
	lo := binary.BigEndian.Uint64(k.addr[8:])
	if v6Prefix <= 64 {
		hi &= ^uint64(0) << (64 - v6Prefix)
		lo = 0
	} else {
		lo &= ^uint64(0) << (128 - v6Prefix)
	}
	binary.BigEndian.PutUint64(k.addr[:8], hi)
	binary.BigEndian.PutUint64(k.addr[8:], lo)
	return k
}

// CheckV6Prefix says whether bits is a usable IPv6 prefix length for
// counting clients, naming the fix when it is not. KeyFor itself treats an
// out-of-range length as the default; this is for the config.
func CheckV6Prefix(bits int) error {
	if bits < 1 || bits > 128 {
		return fmt.Errorf("rate limit: IPv6 prefix length %d is out of range; use 1 to 128, usually 64 (one customer subnet) or 56/48 (one customer site)", bits)
	}
	return nil
}

// noAddr is the bucket of the zero Addr: ff..ff, a multicast address that
// is never the source of a connection.
var noAddr = func() (a [16]byte) {
	for i := range a {
		a[i] = 0xff
	}
	return a
}()

// Scope is the scope the key was built with.
func (k Key) Scope() uint32 { return k.scope }

// Addr is the client the key stands for: the IPv4 address, or the first
// address of the IPv6 prefix; the zero Addr for the key of the zero Addr.
func (k Key) Addr() netip.Addr {
	if k.addr == noAddr {
		return netip.Addr{}
	}
	return netip.AddrFrom16(k.addr).Unmap()
}

// String is for logs: "203.0.113.7" or "2001:db8:1:2::" with the scope in
// front when it is not 0 ("3/203.0.113.7").
func (k Key) String() string {
	if k.scope == 0 {
		return k.Addr().String()
	}
	return fmt.Sprintf("%d/%s", k.scope, k.Addr())
}

// v4 packs an IPv4 key into 8 bytes: scope<<32 | address.
func (k Key) v4() (uint64, bool) {
	if binary.LittleEndian.Uint64(k.addr[:8]) != 0 || binary.BigEndian.Uint32(k.addr[8:12]) != 0xffff {
		return 0, false
	}
	return uint64(k.scope)<<32 | uint64(binary.BigEndian.Uint32(k.addr[12:])), true
}

// net64 is a key whose address ends in 64 zero bits, as every IPv6 key
// cut at /64 or shorter does, packed into 16 bytes.
type net64 struct {
	prefix uint64
	scope  uint64 // a uint32 widened: without padding the key hashes as plain memory
}

// net64 packs k if its address ends in 64 zero bits. No IPv4 key and not
// the zero Addr's does, so the three packings never mix.
func (k Key) net64() (net64, bool) {
	if binary.LittleEndian.Uint64(k.addr[8:]) != 0 {
		return net64{}, false
	}
	return net64{binary.BigEndian.Uint64(k.addr[:8]), uint64(k.scope)}, true
}

// hash spreads keys over shards; the shard is its top bits. It is seeded
// per Memory, so that a client cannot choose addresses that all land on
// one shard. Multiplying by an odd constant carries every bit of the
// input into the top bits of the product.
func (k Key) hash(seed uint64) uint64 {
	hi := binary.LittleEndian.Uint64(k.addr[:8])
	lo := binary.LittleEndian.Uint64(k.addr[8:])
	x := lo ^ seed ^ (hi^uint64(k.scope))*0x9e3779b97f4a7c15
	return x * 0xbf58476d1ce4e5b9
}
