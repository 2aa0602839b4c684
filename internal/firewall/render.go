package firewall

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Table is the name of moat's table, in the inet family (IPv4 and IPv6).
const Table = "moat"

// Ban is an address or prefix that may not reach anything, until Expires.
type Ban struct {
	Prefix  netip.Prefix
	Expires time.Duration // from now; 0 for no expiry
}

// Render writes the nft script that replaces moat's table with one for
// rules and bans, in one transaction: the table is created if missing (so
// that deleting it cannot fail), deleted, and declared anew. Nothing
// outside "table inet moat" is named.
func Render(rules []Rule, bans []Ban) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\n", Table, Table)
	b.WriteString(renderTable(rules, bans))
	return b.String()
}

// renderTable writes the table declaration alone.
func renderTable(rules []Rule, bans []Ban) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", Table)
	writeBanSet(&b, "ban4", "ipv4_addr", bans, true)
	writeBanSet(&b, "ban6", "ipv6_addr", bans, false)
	b.WriteString(inputChain(rules))
	b.WriteString(forwardChain(rules))
	b.WriteString("}\n")
	return b.String()
}

func writeBanSet(b *strings.Builder, name, typ string, bans []Ban, v4 bool) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tflags interval, timeout\n", name, typ)
	var elems []string
	for _, ban := range bans {
		if ban.Prefix.Addr().Is4() != v4 {
			continue
		}
		e := ban.Prefix.String()
		if ban.Expires > 0 {
			e += fmt.Sprintf(" timeout %dms", max(ban.Expires.Milliseconds(), 1000))
		}
		elems = append(elems, e)
	}
	if len(elems) > 0 {
		b.WriteString("\t\telements = { ")
		for i, e := range elems {
			if i > 0 {
				b.WriteString(",\n\t\t\t")
			}
			b.WriteString(e)
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n")
}

// icmpTypes are the ICMP messages IPv4 needs to work (path MTU discovery,
// errors); echo requests are accepted at a limited rate.
const icmpTypes = "destination-unreachable, time-exceeded, parameter-problem, echo-reply"

// icmpv6Types are the ICMPv6 messages IPv6 cannot work without: neighbour
// discovery, packet-too-big (RFC 4890).
const icmpv6Types = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-reply, " +
	"nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, " +
	"mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report"

func inputChain(rules []Rule) string {
	var b strings.Builder
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter - 1; policy drop;\n")
	b.WriteString("\t\tiif \"lo\" accept\n")
	b.WriteString("\t\tip saddr @ban4 drop\n\t\tip6 saddr @ban6 drop\n")
	b.WriteString("\t\tct state established,related accept\n\t\tct state invalid drop\n")
	fmt.Fprintf(&b, "\t\tip protocol icmp icmp type { %s } accept\n", icmpTypes)
	b.WriteString("\t\tip protocol icmp icmp type echo-request limit rate 20/second burst 50 packets accept\n")
	fmt.Fprintf(&b, "\t\tmeta l4proto ipv6-icmp icmpv6 type { %s } accept\n", icmpv6Types)
	b.WriteString("\t\tmeta l4proto ipv6-icmp icmpv6 type echo-request limit rate 20/second burst 50 packets accept\n")
	// DHCPv6 replies come from the server's link-local address to the
	// client port, answering a request sent to a multicast address, so
	// conntrack does not see them as replies (clouds hand out IPv6 so).
	b.WriteString("\t\tip6 saddr fe80::/10 ip6 daddr fe80::/10 udp sport 547 udp dport 546 accept\n")
	for _, r := range rules {
		for _, m := range sourceMatches(r.Sources) {
			fmt.Fprintf(&b, "\t\t%s%s dport %s accept%s\n", m, r.Proto, portMatch(r), comment(r))
		}
	}
	b.WriteString("\t}\n")
	return b.String()
}

// forwardChain drops forwarded connections that a DNAT sent on (Docker's
// published ports, and anyone else's port forwards) unless a rule allows
// their original destination port from their source.
//
// Why this holds whatever Docker does: Docker publishes a port with a DNAT
// in the nat table, so the packet takes the forward path to the
// container, never the input path (the reason ufw is silently bypassed).
// Whichever backend writes those rules (iptables-nft, iptables-legacy, or
// Docker 29's own nftables tables, which have no DOCKER-USER chain), the
// packet still passes every base chain on the forward hook, moat's among
// them, after the DNAT (prerouting) has happened: conntrack then knows the
// connection was DNATed (ct status dnat) and what port the client asked
// for (ct original proto-dst). A drop in any base chain is final in
// netfilter, while an accept only ends that chain, so moat's chain only
// ever drops: nothing Docker accepts can undo it, and since the chain
// lives in moat's own table, Docker deleting and rewriting its rules (on
// every restart) cannot remove it. Replies and other forwarded traffic
// (containers reaching out) are not DNATed new connections, and pass.
func forwardChain(rules []Rule) string {
	var b strings.Builder
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter - 1; policy accept;\n")
	b.WriteString("\t\tip saddr @ban4 drop\n\t\tip6 saddr @ban6 drop\n")
	b.WriteString("\t\tct state new ct status dnat jump published\n")
	b.WriteString("\t}\n")
	b.WriteString("\tchain published {\n")
	for _, r := range rules {
		for _, m := range sourceMatches(r.Sources) {
			// nft needs the protocol pinned before ct original proto-dst.
			fmt.Fprintf(&b, "\t\t%smeta l4proto %s ct original proto-dst %s return%s\n", m, r.Proto, portMatch(r), comment(r))
		}
	}
	b.WriteString("\t\tdrop\n\t}\n")
	return b.String()
}

// sourceMatches is the source part of a rule's statements: one statement
// for any source, else one per address family present.
func sourceMatches(sources []netip.Prefix) []string {
	if len(sources) == 0 {
		return []string{""}
	}
	var v4, v6 []string
	for _, p := range sources {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	var out []string
	if len(v4) > 0 {
		out = append(out, "ip saddr { "+strings.Join(v4, ", ")+" } ")
	}
	if len(v6) > 0 {
		out = append(out, "ip6 saddr { "+strings.Join(v6, ", ")+" } ")
	}
	return out
}

func portMatch(r Rule) string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

func comment(r Rule) string {
	c := r.Comment
	if r.App != "" {
		c = strings.TrimSpace("app " + r.App + ": " + c)
	}
	if c == "" {
		return ""
	}
	return fmt.Sprintf(" comment %q", c)
}
