package maildns

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	testIPv4 = netip.MustParseAddr("203.0.113.5")
	testIPv6 = netip.MustParseAddr("2001:db8::5")
)

func TestRecords(t *testing.T) {
	keys := testKeys(t)
	both := []netip.Addr{testIPv4, testIPv6}
	tests := []struct {
		name      string
		ips       []netip.Addr
		smarthost string
		reportTo  string
		spf       string
		spfWhy    string // a substring of the SPF record's Why
		dmarc     string
	}{
		{
			name: "direct delivery", ips: both, reportTo: "dmarc@example.com",
			spf:    "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 -all",
			spfWhy: "only from this server",
			dmarc:  "v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:dmarc@example.com",
		},
		{
			name: "no addresses known",
			spf:  "v=spf1 a -all", spfWhy: "only from this server",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "addresses repeated and IPv4-mapped", reportTo: "mailto:dmarc@example.com",
			ips: []netip.Addr{testIPv4, netip.MustParseAddr("::ffff:203.0.113.5"), testIPv6, testIPv6},
			spf: "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 -all", spfWhy: "only from this server",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:dmarc@example.com",
		},
		{
			name: "Amazon SES", ips: []netip.Addr{testIPv4}, smarthost: "email-smtp.eu-west-1.amazonaws.com:587",
			spf: "v=spf1 ip4:203.0.113.5 include:amazonses.com ~all", spfWhy: "Amazon SES",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "Mailgun", ips: both, smarthost: "smtp.mailgun.org",
			spf: "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 include:mailgun.org ~all", spfWhy: "Mailgun",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "Mailgun EU, no addresses", smarthost: "smtp.eu.mailgun.org.",
			spf: "v=spf1 include:mailgun.org ~all", spfWhy: "Mailgun",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "SendGrid", ips: []netip.Addr{testIPv4}, smarthost: "smtp.sendgrid.net",
			spf: "v=spf1 ip4:203.0.113.5 include:sendgrid.net ~all", spfWhy: "SendGrid",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "Brevo", ips: []netip.Addr{testIPv4}, smarthost: "smtp-relay.brevo.com",
			spf: "v=spf1 ip4:203.0.113.5 include:spf.brevo.com ~all", spfWhy: "Brevo",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "Sendinblue", ips: []netip.Addr{testIPv4}, smarthost: "SMTP-relay.sendinblue.com",
			spf: "v=spf1 ip4:203.0.113.5 include:spf.brevo.com ~all", spfWhy: "Brevo",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "unknown smarthost", ips: []netip.Addr{testIPv4}, smarthost: "mail.example.net:465",
			spf: "v=spf1 ip4:203.0.113.5 ~all", spfWhy: "moat relays through mail.example.net, so add the include:",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
		{
			name: "unknown smarthost, no addresses", smarthost: "relay.example.net",
			spf: "v=spf1 a ~all", spfWhy: "add the include:",
			dmarc: "v=DMARC1; p=quarantine; adkim=s; aspf=s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := Records("Example.com.", keys, tt.ips, tt.smarthost, tt.reportTo)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 4 {
				t.Fatalf("got %d records, want 4: %+v", len(recs), recs)
			}
			for i, k := range keys {
				txt, _ := k.TXT()
				want := Record{Name: k.Selector + "._domainkey.example.com", Type: "TXT", Value: txt}
				if got := recs[i]; got.Name != want.Name || got.Type != want.Type || got.Value != want.Value {
					t.Errorf("DKIM record %d = %s %s %q, want %s %s %q", i, got.Name, got.Type, got.Value, want.Name, want.Type, want.Value)
				}
			}
			spf, dmarc := recs[2], recs[3]
			if spf.Name != "example.com" || spf.Type != "TXT" || spf.Value != tt.spf {
				t.Errorf("SPF record = %s %s %q, want example.com TXT %q", spf.Name, spf.Type, spf.Value, tt.spf)
			}
			if !strings.Contains(spf.Why, tt.spfWhy) {
				t.Errorf("SPF Why = %q, want it to say %q", spf.Why, tt.spfWhy)
			}
			if dmarc.Name != "_dmarc.example.com" || dmarc.Type != "TXT" || dmarc.Value != tt.dmarc {
				t.Errorf("DMARC record = %s %s %q, want _dmarc.example.com TXT %q", dmarc.Name, dmarc.Type, dmarc.Value, tt.dmarc)
			}
			for _, r := range recs {
				if r.Why == "" || !strings.HasSuffix(r.Why, ".") {
					t.Errorf("record %s has Why %q, want a sentence", r.Name, r.Why)
				}
			}
		})
	}
}

func TestRecordsRefuses(t *testing.T) {
	keys := testKeys(t)
	tests := []struct {
		name      string
		domain    string
		keys      []Key
		ips       []netip.Addr
		smarthost string
		reportTo  string
		want      string
	}{
		{name: "bad domain", domain: "exa mple.com", keys: keys, want: `"exa mple.com"`},
		{name: "no keys", domain: "example.com", want: "no DKIM keys"},
		{name: "same selector twice", domain: "example.com", keys: []Key{keys[0], keys[0]}, want: "two keys with selector moat-ed25519"},
		{name: "private address", domain: "example.com", keys: keys, ips: []netip.Addr{netip.MustParseAddr("10.0.0.7")}, want: "10.0.0.7 is not a public address"},
		{name: "zero address", domain: "example.com", keys: keys, ips: []netip.Addr{{}}, want: "empty"},
		{name: "bad smarthost", domain: "example.com", keys: keys, smarthost: "smtp..example.net", want: "smarthost"},
		{name: "bad report address", domain: "example.com", keys: keys, reportTo: "dmarc@example.com; p=none", want: "DMARC report address"},
		{name: "report address without domain", domain: "example.com", keys: keys, reportTo: "dmarc", want: "DMARC report address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Records(tt.domain, tt.keys, tt.ips, tt.smarthost, tt.reportTo)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Records error = %v, want one saying %s", err, tt.want)
			}
		})
	}
}

func TestTXTStrings(t *testing.T) {
	rsaTXT, err := testKeys(t)[1].TXT()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		value string
		parts int
	}{
		{"RSA key", rsaTXT, 2},
		{"short", "v=spf1 a -all", 1},
		{"exactly 255 bytes", strings.Repeat("x", 255), 1},
		{"256 bytes", strings.Repeat("x", 256), 2},
		{"empty", "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts := TXTStrings(tt.value)
			if len(parts) != tt.parts {
				t.Errorf("%d strings, want %d", len(parts), tt.parts)
			}
			for i, p := range parts {
				if len(p) > 255 {
					t.Errorf("string %d is %d bytes, more than 255", i, len(p))
				}
			}
			if got := strings.Join(parts, ""); got != tt.value {
				t.Errorf("strings join to %q, want %q", got, tt.value)
			}
		})
	}
}
