// Package maildns is the DNS side of moat's outgoing mail: the DKIM keys
// moat signs with and the signing itself, the records the owner of a
// domain must publish for receivers to trust its mail (DKIM, SPF and
// DMARC), a check of what DNS actually says about those records, and the
// lookup of a domain's mail exchangers for direct delivery.
//
// It sends no mail and keeps no state: internal/mail queues and delivers,
// the store keeps the keys as MarshalPrivate writes them, and this package
// only computes and asks. Nor is it a resolver: it asks one name server
// (or the system's), believes its answers without DNSSEC validation, and
// caches nothing, which is what a check that must show the live state
// wants.
package maildns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Record is one DNS record to publish.
type Record struct {
	// Name is the owner name, fully qualified and without the trailing
	// dot, like "moat-rsa._domainkey.example.com".
	Name string
	// Type is the record type; moat's mail records are all "TXT".
	Type string
	// Value is the whole value as one string, however many 255-byte
	// strings it takes in DNS (see TXTStrings).
	Value string
	// Why says in one plain sentence what the record is for, for the
	// owner who has to publish it.
	Why string
}

// Records lists what the owner of domain publishes for moat's mail:
//
//   - one DKIM key record per key, at <selector>._domainkey.<domain>;
//   - SPF at <domain>, saying which servers send its mail: with no
//     smarthost, the given public addresses of this server and -all
//     ("v=spf1 a -all" when none are known); with a smarthost of a known
//     provider (Amazon SES, Mailgun, SendGrid, Brevo), the provider's
//     include plus the addresses and ~all; with another smarthost, the
//     addresses and ~all and a Why that tells the owner to add their
//     provider's include;
//   - DMARC at _dmarc.<domain>: "v=DMARC1; p=quarantine; adkim=s; aspf=s"
//     and "rua=mailto:<reportTo>" when reportTo is not empty.
//
// smarthost is a host name, with or without ":port".
func Records(domain string, keys []Key, publicIPs []netip.Addr, smarthost string, reportTo string) ([]Record, error) {
	d, err := domainName(domain)
	if err != nil {
		return nil, fmt.Errorf("mail DNS records: %w", err)
	}
	if len(keys) == 0 {
		// Without DKIM, DMARC rests on SPF alone, which forwarding breaks.
		return nil, fmt.Errorf("mail DNS records for %s: no DKIM keys", d)
	}
	var recs []Record
	seen := make(map[string]bool)
	for _, k := range keys {
		if err := validSelector(k.Selector); err != nil {
			return nil, fmt.Errorf("mail DNS records for %s: %w", d, err)
		}
		name := strings.ToLower(k.Selector) + "._domainkey." + d
		if seen[name] {
			return nil, fmt.Errorf("mail DNS records for %s: two keys with selector %s", d, k.Selector)
		}
		seen[name] = true
		txt, err := k.TXT()
		if err != nil {
			return nil, fmt.Errorf("mail DNS records for %s: %w", d, err)
		}
		recs = append(recs, Record{Name: name, Type: "TXT", Value: txt, Why: dkimWhy(k.Algorithm, d)})
	}
	spf, err := spfRecord(d, publicIPs, smarthost)
	if err != nil {
		return nil, fmt.Errorf("mail DNS records for %s: %w", d, err)
	}
	dmarc, err := dmarcRecord(d, reportTo)
	if err != nil {
		return nil, fmt.Errorf("mail DNS records for %s: %w", d, err)
	}
	return append(recs, spf, dmarc), nil
}

// dkimWhy explains a DKIM key record.
func dkimWhy(algo, domain string) string {
	if algo == "rsa" {
		return "Publishes moat's RSA DKIM key, for receivers that do not check Ed25519 signatures yet, so they too can tell that mail from " + domain + " was sent by this server and not changed on the way."
	}
	return "Publishes moat's Ed25519 DKIM key, so receivers can tell that mail from " + domain + " was sent by this server and not changed on the way."
}

// spfRecord returns the SPF record for domain; see Records.
func spfRecord(domain string, publicIPs []netip.Addr, smarthost string) (Record, error) {
	terms := []string{"v=spf1"}
	seen := make(map[netip.Addr]bool)
	for _, a := range publicIPs {
		a = a.Unmap()
		if !a.IsValid() {
			return Record{}, errors.New("SPF: a public address is empty")
		}
		if !a.IsGlobalUnicast() || a.IsPrivate() {
			return Record{}, fmt.Errorf("SPF: %s is not a public address: receivers never see mail come from it", a)
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			terms = append(terms, "ip4:"+a.String())
		} else {
			terms = append(terms, "ip6:"+a.String())
		}
	}
	rec := Record{Name: domain, Type: "TXT"}

	if smarthost == "" {
		if len(seen) == 0 {
			// The server's addresses are not known; the domain's own A
			// and AAAA records are the best guess at where mail leaves.
			terms = append(terms, "a")
		}
		rec.Value = strings.Join(append(terms, "-all"), " ")
		rec.Why = "Tells receivers that mail from " + domain + " comes only from this server, so they refuse mail from anywhere else that claims to be from it."
		return rec, nil
	}

	host, err := smarthostName(smarthost)
	if err != nil {
		return Record{}, fmt.Errorf("SPF: %w", err)
	}
	// ~all rather than -all: a provider's sending networks change under
	// its include, and a receiver that softfails still weighs DKIM.
	provider, include := providerInclude(host)
	if include != "" {
		rec.Value = strings.Join(append(terms, "include:"+include, "~all"), " ")
		rec.Why = "Tells receivers that mail from " + domain + " comes from " + provider + " (which moat relays through) or this server, and to distrust mail from anywhere else."
		return rec, nil
	}
	if len(seen) == 0 {
		terms = append(terms, "a")
	}
	rec.Value = strings.Join(append(terms, "~all"), " ")
	rec.Why = "Tells receivers which servers send mail from " + domain + "; moat relays through " + host + ", so add the include: your provider documents for it before ~all, or receivers will distrust the mail it relays."
	return rec, nil
}

// providerInclude returns the name and SPF include of the mail provider
// that runs host, or empty strings for a provider moat does not know.
func providerInclude(host string) (name, include string) {
	switch {
	case strings.HasPrefix(host, "email-smtp") && inDomain(host, "amazonaws.com"):
		return "Amazon SES", "amazonses.com"
	case inDomain(host, "mailgun.org"):
		return "Mailgun", "mailgun.org"
	case inDomain(host, "sendgrid.net"):
		return "SendGrid", "sendgrid.net"
	case inDomain(host, "brevo.com"), inDomain(host, "sendinblue.com"):
		return "Brevo", "spf.brevo.com"
	}
	return "", ""
}

// inDomain reports whether host is domain or a name under it.
func inDomain(host, domain string) bool {
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// smarthostName returns the host name of a smarthost given as "host" or
// "host:port".
func smarthostName(smarthost string) (string, error) {
	host := smarthost
	if h, _, err := net.SplitHostPort(smarthost); err == nil {
		host = h
	}
	d, err := domainName(host)
	if err != nil {
		return "", fmt.Errorf("smarthost %q: %w", smarthost, err)
	}
	return d, nil
}

// dmarcRecord returns the DMARC record for domain; see Records.
func dmarcRecord(domain, reportTo string) (Record, error) {
	// Strict alignment: moat signs with d=<domain> exactly, so nothing
	// legitimate needs the relaxed kind, and strict stops a subdomain
	// someone else controls from passing for the domain.
	value := "v=DMARC1; p=quarantine; adkim=s; aspf=s"
	why := "Tells receivers to put mail that claims to be from " + domain + " but fails the DKIM and SPF checks into spam"
	if reportTo != "" {
		addr := strings.TrimPrefix(reportTo, "mailto:")
		local, host, ok := strings.Cut(addr, "@")
		if !ok || local == "" || strings.ContainsAny(addr, " \t;,!") {
			return Record{}, fmt.Errorf("DMARC report address %q: want a plain address like postmaster@%s", reportTo, domain)
		}
		if _, err := domainName(host); err != nil {
			return Record{}, fmt.Errorf("DMARC report address %q: %w", reportTo, err)
		}
		value += "; rua=mailto:" + addr
		why += ", and to send daily reports of what they saw to " + addr
	}
	return Record{Name: "_dmarc." + domain, Type: "TXT", Value: value, Why: why + "."}, nil
}

// maxTXTString is the longest string a TXT record can hold: its length is
// one byte (RFC 1035 section 3.3).
const maxTXTString = 255

// TXTStrings splits a TXT value into the strings of at most 255 bytes a
// TXT record is made of (an RSA key needs two), for showing the record
// to the owner in zone-file syntax: "part1" "part2". Receivers join the
// strings back without a separator.
func TXTStrings(value string) []string {
	if value == "" {
		return []string{""}
	}
	var parts []string
	for len(value) > maxTXTString {
		parts = append(parts, value[:maxTXTString])
		value = value[maxTXTString:]
	}
	return append(parts, value)
}

// zoneTXT is a TXT record in zone-file syntax, the form most DNS
// providers' forms and every zone file accept.
func zoneTXT(name, value string) string {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	parts := TXTStrings(value)
	for i, p := range parts {
		parts[i] = `"` + esc.Replace(p) + `"`
	}
	return "TXT " + name + " " + strings.Join(parts, " ")
}

// maxName is the longest domain name in presentation form without the
// trailing dot (RFC 1035 section 2.3.4).
const maxName = 253

// domainName returns s lower-cased and without a trailing dot, or an error
// if it is not a host name: labels of letters, digits and hyphens.
func domainName(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if d == "" {
		return "", errors.New("empty domain name")
	}
	if len(d) > maxName {
		return "", fmt.Errorf("domain name %q is longer than %d bytes", s, maxName)
	}
	for label := range strings.SplitSeq(d, ".") {
		if !isLDH(label) {
			return "", fmt.Errorf("%q is not a domain name: want labels of letters, digits and hyphens", s)
		}
	}
	return d, nil
}

// maxLabel is the longest DNS label (RFC 1035 section 2.3.4).
const maxLabel = 63

// isLDH reports whether label is a DNS label of letters, digits and
// hyphens, not starting or ending with a hyphen.
func isLDH(label string) bool {
	if label == "" || len(label) > maxLabel || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for _, c := range []byte(label) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
