// Package firewall turns moat's desired firewall rules into an nftables
// ruleset and applies it.
//
// Everything moat does lives in a table of its own, "table inet moat",
// replaced whole in one nftables transaction (nft -f): other tables (the
// distribution's, Docker's, anyone's) are never flushed or touched. The
// table holds:
//
//   - an input chain with policy drop: loopback, established and related
//     traffic, the ICMP and ICMPv6 messages that IPv4 and IPv6 need, and
//     the ports the rules open (to any source, or to listed sources);
//   - a forward chain that only ever drops: connections that Docker (or
//     anyone) forwards after a DNAT are dropped unless a rule allows their
//     original destination port (see forwardChain for why this holds
//     whichever firewall backend Docker uses);
//   - two sets of banned addresses and prefixes (IPv4, IPv6), each element
//     with its own timeout, dropped before anything is accepted. The
//     kernel expires them, whether moat runs or not.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule opens a port or a range of ports to any source or to the listed
// ones.
type Rule struct {
	Proto   string         // "tcp" or "udp"
	From    uint16         // first port
	To      uint16         // last port; equal to From for one port
	Sources []netip.Prefix // empty: any source; else only these
	Comment string
	App     string // the app that declared the port, "" for the server's own
}

// Error is a rule that cannot be used: which part, what was given, and
// how to fix it.
type Error struct {
	Field, Value, Problem, Fix string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %q: %s; %s", e.Field, e.Value, e.Problem, e.Fix)
}

// ParsePorts reads "5432/tcp", "8000-8100/udp" or "443" (tcp).
func ParsePorts(spec string) (proto string, from, to uint16, err error) {
	bad := func(problem, fix string) (string, uint16, uint16, error) {
		return "", 0, 0, &Error{Field: "port", Value: spec, Problem: problem, Fix: fix}
	}
	ports, proto, hasProto := strings.Cut(strings.TrimSpace(spec), "/")
	if !hasProto {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return bad("the protocol is not tcp or udp", "write PORT/tcp or PORT/udp, like 5432/tcp")
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	f, err1 := port(lo)
	t, err2 := port(hi)
	if err1 != nil || err2 != nil {
		return bad("a port is a number from 1 to 65535", "write one port like 5432/tcp, or a range like 8000-8100/tcp")
	}
	if f > t {
		return bad("the range runs backwards", fmt.Sprintf("write %d-%d", t, f))
	}
	return proto, f, t, nil
}

func port(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("not a port")
	}
	return uint16(n), nil
}

// ParseSource reads an address or a CIDR prefix; a lone address is a /32
// (or /128), an IPv4-mapped IPv6 address is the IPv4 address it maps,
// and host bits are refused rather than guessed at.
func ParseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	bad := func(problem, fix string) (netip.Prefix, error) {
		return netip.Prefix{}, &Error{Field: "source", Value: s, Problem: problem, Fix: fix}
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return bad("not an IP address or CIDR prefix", "write an address like 203.0.113.7 or 2001:db8::7, or a prefix like 203.0.113.0/24")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return bad("not a CIDR prefix", "write a prefix like 203.0.113.0/24 or 2001:db8::/48")
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if p.Masked() != p {
		return bad("the address has bits set beyond the prefix length", "write "+p.Masked().String())
	}
	return p, nil
}

// String writes the rule as the CLI takes it: "5432/tcp from 203.0.113.0/24".
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(r.From)))
	if r.To != r.From {
		b.WriteString("-" + strconv.Itoa(int(r.To)))
	}
	b.WriteString("/" + r.Proto)
	if len(r.Sources) > 0 {
		b.WriteString(" from ")
		for i, s := range r.Sources {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(s.String())
		}
	}
	return b.String()
}

// Check validates a set of rules: each on its own, then against each
// other. A rule that repeats another, or opens what another already opens
// to the same sources, is reported with both.
func Check(rules []Rule) error {
	var errs []error
	for i, r := range rules {
		at := fmt.Sprintf("rule %d (%s)", i+1, r)
		if r.Proto != "tcp" && r.Proto != "udp" {
			errs = append(errs, &Error{Field: at + " protocol", Value: r.Proto, Problem: "is not tcp or udp", Fix: "use tcp or udp"})
		}
		if r.From == 0 || r.To < r.From {
			errs = append(errs, &Error{Field: at + " ports", Value: fmt.Sprintf("%d-%d", r.From, r.To), Problem: "is not a port or an ascending range of ports from 1 to 65535", Fix: "write a port like 5432 or a range like 8000-8100"})
		}
		for _, s := range r.Sources {
			if !s.IsValid() || s.Masked() != s || s.Addr().Is4In6() {
				errs = append(errs, &Error{Field: at + " source", Value: s.String(), Problem: "is not a normalised CIDR prefix", Fix: "write it as " + s.Masked().String()})
			}
		}
		if !plainText(r.App) {
			errs = append(errs, &Error{Field: at + " app", Value: r.App, Problem: "is not a plain name", Fix: "use the app's name as moat lists it"})
		}
		if !plainText(r.Comment) {
			errs = append(errs, &Error{Field: at + " comment", Value: r.Comment, Problem: "has quotes, backslashes or characters other than printable ASCII, or is longer than 128 characters", Fix: "use a short plain comment, like office"})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for i, a := range rules {
		for j := i + 1; j < len(rules); j++ {
			b := rules[j]
			if a.Proto != b.Proto || a.To < b.From || b.To < a.From {
				continue
			}
			switch {
			case Covers(a, b):
				errs = append(errs, fmt.Errorf("rule %d (%s) already opens what rule %d (%s) opens: drop rule %d", i+1, a, j+1, b, j+1))
			case Covers(b, a):
				errs = append(errs, fmt.Errorf("rule %d (%s) already opens what rule %d (%s) opens: drop rule %d", j+1, b, i+1, a, i+1))
			}
		}
	}
	return errors.Join(errs...)
}

// Covers reports whether rule a opens everything rule b opens.
func Covers(a, b Rule) bool {
	if a.Proto != b.Proto || a.From > b.From || a.To < b.To {
		return false
	}
	if len(a.Sources) == 0 {
		return true
	}
	if len(b.Sources) == 0 {
		return false
	}
	for _, s := range b.Sources {
		if !slices.ContainsFunc(a.Sources, func(p netip.Prefix) bool { return p.Bits() <= s.Bits() && p.Contains(s.Addr()) }) {
			return false
		}
	}
	return true
}

// Allows reports whether the rules let addr connect to port over proto
// (the input path; bans aside).
func Allows(rules []Rule, proto string, addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	for _, r := range rules {
		if r.Proto != proto || port < r.From || port > r.To {
			continue
		}
		if len(r.Sources) == 0 || slices.ContainsFunc(r.Sources, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return true
		}
	}
	return false
}

// PlainText reports whether s can stand in a rule's comment (an nft
// comment, as it is): printable ASCII without quotes or backslashes, at
// most 128 characters.
func PlainText(s string) bool { return plainText(s) }

func plainText(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// PrivateNetworks are the sources an app's internal port is open to: the
// private IPv4 ranges (RFC 1918), shared address space (RFC 6598, used by
// Tailscale and carrier NAT), and IPv6 unique-local and link-local
// addresses. Loopback needs no rule.
func PrivateNetworks() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}
