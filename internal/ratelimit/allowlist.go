package ratelimit

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Allowlist is a set of addresses and networks that are never limited:
// the owner's own IPs, a monitoring service, an office. The edge's Policy
// consults it before the limiter. Contains is a binary search over merged
// address ranges, so a long list costs no more than a short one. The zero
// Allowlist (and a nil *Allowlist) contains nothing.
type Allowlist struct {
	v4 []span // ranges of IPv4 addresses, as 32-bit numbers in lo
	v6 []span
}

// span is a closed range of addresses [first, last], as 128-bit numbers.
type span struct{ first, last u128 }

type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next is a+1, and false if a is the last address.
func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

func toU128(addr netip.Addr) u128 {
	if addr.Is4() {
		b := addr.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := addr.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// NewAllowlist returns the allowlist of prefixes. A prefix written in its
// IPv4-mapped IPv6 form (::ffff:10.0.0.0/104) counts as the IPv4 network;
// invalid prefixes are skipped (ParseAllowlist reports them).
func NewAllowlist(prefixes ...netip.Prefix) *Allowlist {
	a := &Allowlist{}
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		addr, bitLen := p.Addr(), p.Bits()
		if addr.Is4In6() && bitLen >= 96 {
			addr, bitLen = addr.Unmap(), bitLen-96
		}
		p = netip.PrefixFrom(addr.WithZone(""), bitLen).Masked()
		first := toU128(p.Addr())
		last := first
		host := p.Addr().BitLen() - p.Bits() // bits that vary within p
		switch {
		case host >= 64:
			last.lo = ^uint64(0)
			last.hi |= ^uint64(0) >> (128 - host)
		case host > 0:
			last.lo |= ^uint64(0) >> (64 - host)
		}
		if p.Addr().Is4() {
			a.v4 = append(a.v4, span{first, last})
		} else {
			a.v6 = append(a.v6, span{first, last})
		}
	}
	a.v4, a.v6 = merge(a.v4), merge(a.v6)
	return a
}

// merge sorts spans and joins those that overlap or touch, so that
// Contains needs one comparison per step of its search.
func merge(ss []span) []span {
	slices.SortFunc(ss, func(a, b span) int { return a.first.cmp(b.first) })
	out := ss[:0]
	for _, s := range ss {
		if n := len(out); n > 0 {
			end, ok := out[n-1].last.next()
			if !ok || s.first.cmp(end) <= 0 {
				if s.last.cmp(out[n-1].last) > 0 {
					out[n-1].last = s.last
				}
				continue
			}
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// ParseAllowlist reads allowlist entries as written in the config: single
// addresses ("203.0.113.7", "2001:db8::1") or networks in CIDR notation
// ("198.51.100.0/24", "2001:db8::/48"). A network with host bits set is
// refused, since it is usually a typo for another network.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	prefixes := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		s := strings.TrimSpace(e)
		if !strings.Contains(s, "/") {
			addr, err := netip.ParseAddr(s)
			if err != nil || addr.Zone() != "" {
				return nil, fmt.Errorf("allowlist entry %q: not an IP address or network; write it like 203.0.113.7 or 198.51.100.0/24", e)
			}
			prefixes = append(prefixes, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allowlist entry %q: not an IP address or network; write it like 203.0.113.7 or 198.51.100.0/24", e)
		}
		if m := p.Masked(); m != p {
			return nil, fmt.Errorf("allowlist entry %q: host bits are set; did you mean %s?", e, m)
		}
		prefixes = append(prefixes, p)
	}
	return NewAllowlist(prefixes...), nil
}

// Contains reports whether addr is on the list. An IPv4-mapped address
// counts as its IPv4 address; a zone is ignored.
func (a *Allowlist) Contains(addr netip.Addr) bool {
	if a == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	ss := a.v6
	if addr.Is4() {
		ss = a.v4
	}
	x := toU128(addr)
	// Find the last span that starts at or before x.
	lo, hi := 0, len(ss)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if ss[mid].first.cmp(x) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo > 0 && x.cmp(ss[lo-1].last) <= 0
}
