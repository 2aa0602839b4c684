package maildns

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The names of the records Records lists for example.com.
const (
	edName    = "moat-ed25519._domainkey.example.com"
	rsaName   = "moat-rsa._domainkey.example.com"
	spfName   = "example.com"
	dmarcName = "_dmarc.example.com"
)

func TestCheck(t *testing.T) {
	keys := testKeys(t)
	records, err := Records("example.com", keys, []netip.Addr{testIPv4, testIPv6}, "", "dmarc@example.com")
	if err != nil {
		t.Fatal(err)
	}
	value := make(map[string]string)
	for _, r := range records {
		value[r.Name] = r.Value
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherTXT, err := Key{Selector: "moat-ed25519", Signer: otherKey}.TXT()
	if err != nil {
		t.Fatal(err)
	}
	edP := strings.TrimPrefix(value[edName], "v=DKIM1; k=ed25519; p=")

	// published is what a DNS provider holds when the owner did
	// everything right, plus a TXT record of another service.
	published := func() map[string][]string {
		return map[string][]string{
			edName:    {value[edName]},
			rsaName:   {value[rsaName]}, // Two strings in DNS: too long for one.
			spfName:   {value[spfName], "google-site-verification=abc123"},
			dmarcName: {value[dmarcName]},
		}
	}
	tests := []struct {
		name        string
		edit        func(z map[string][]string) // changes to published
		raw         []string                    // zone-file lines added
		rcodes      map[string]int
		truncateUDP bool
		problems    map[string]string // by record name, a substring of the Problem; other records must be OK
		fixes       map[string]string // by record name, a substring of the Fix
	}{
		{name: "all right"},
		{
			name: "all right in other words",
			edit: func(z map[string][]string) {
				// Tags in another order, spaces and a folded p=.
				z[edName] = []string{"v=DKIM1;p=" + edP[:20] + " " + edP[20:] + " ;  k=ed25519; t=s"}
				z[spfName] = []string{"v=spf1 mx ip4:203.0.113.0/24 +ip6:2001:db8::/48 include:_spf.google.com ~all"}
				z[dmarcName] = []string{"v=DMARC1;p=reject;rua=mailto:reports@dmarc.example.net"}
			},
		},
		{name: "answers too big for UDP", truncateUDP: true},
		{
			name: "SPF in two strings",
			edit: func(z map[string][]string) { z[spfName] = nil },
			raw:  []string{`example.com. 300 IN TXT "v=spf1 ip4:203.0.113.5 " "ip6:2001:db8::5 -all"`},
		},
		{
			name:     "DKIM missing",
			edit:     func(z map[string][]string) { delete(z, rsaName) },
			problems: map[string]string{rsaName: "no TXT record at " + rsaName},
			fixes:    map[string]string{rsaName: `publish TXT ` + rsaName + ` "v=DKIM1; k=rsa; p=`},
		},
		{
			name:     "DKIM with another key",
			edit:     func(z map[string][]string) { z[edName] = []string{otherTXT} },
			problems: map[string]string{edName: "the DKIM key published at " + edName + " is not moat's (p= differs)"},
			fixes:    map[string]string{edName: "replace it with TXT " + edName + ` "` + value[edName] + `"`},
		},
		{
			name:     "DKIM of the other algorithm",
			edit:     func(z map[string][]string) { z[rsaName] = z[edName] },
			problems: map[string]string{rsaName: "is not moat's (k=ed25519, moat's is k=rsa)"},
		},
		{
			name:     "DKIM name holding two records",
			edit:     func(z map[string][]string) { z[edName] = append(z[edName], otherTXT) },
			problems: map[string]string{edName: "two TXT records at " + edName},
		},
		{
			name:     "two SPF records",
			edit:     func(z map[string][]string) { z[spfName] = append(z[spfName], "v=spf1 include:_spf.google.com ~all") },
			problems: map[string]string{spfName: "two SPF records at example.com: receivers treat that as an error"},
			fixes:    map[string]string{spfName: `merge them into one: TXT example.com "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 include:_spf.google.com -all"`},
		},
		{
			name: "SPF without the IPv6 address",
			edit: func(z map[string][]string) {
				z[spfName] = []string{"v=spf1 include:_spf.google.com ip4:203.0.113.5 ~all"}
			},
			problems: map[string]string{spfName: "the SPF record at example.com does not authorise ip6:2001:db8::5"},
			fixes:    map[string]string{spfName: `change it to TXT example.com "v=spf1 include:_spf.google.com ip4:203.0.113.5 ip6:2001:db8::5 ~all"`},
		},
		{
			name:     "SPF failing the address",
			edit:     func(z map[string][]string) { z[spfName] = []string{"v=spf1 -ip4:203.0.113.5 ip6:2001:db8::5 -all"} },
			problems: map[string]string{spfName: "does not authorise ip4:203.0.113.5"},
		},
		{
			name:     "SPF neutral for everyone else",
			edit:     func(z map[string][]string) { z[spfName] = []string{"v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ?all"} },
			problems: map[string]string{spfName: "ends in ?all"},
			fixes:    map[string]string{spfName: `"v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 -all"`},
		},
		{
			name:     "no SPF record, only another TXT",
			edit:     func(z map[string][]string) { z[spfName] = z[spfName][1:] },
			problems: map[string]string{spfName: "no SPF record at example.com"},
		},
		{
			name: "DMARC p=none",
			edit: func(z map[string][]string) {
				z[dmarcName] = []string{"v=DMARC1; p=none; rua=mailto:reports@dmarc.example.net"}
			},
			problems: map[string]string{dmarcName: "has p=none"},
			fixes:    map[string]string{dmarcName: `change p=none to p=quarantine: TXT _dmarc.example.com "v=DMARC1; p=quarantine; rua=mailto:reports@dmarc.example.net"`},
		},
		{
			name:     "DMARC missing",
			edit:     func(z map[string][]string) { delete(z, dmarcName) },
			problems: map[string]string{dmarcName: "no DMARC record at _dmarc.example.com"},
			fixes:    map[string]string{dmarcName: `publish TXT _dmarc.example.com "v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:dmarc@example.com"`},
		},
		{
			name:     "two DMARC records",
			edit:     func(z map[string][]string) { z[dmarcName] = append(z[dmarcName], "v=DMARC1; p=reject") },
			problems: map[string]string{dmarcName: "two DMARC records"},
		},
		{
			name:   "server failure",
			rcodes: map[string]int{"*": dns.RcodeServerFailure},
			problems: map[string]string{
				edName:    "the lookup of TXT " + edName + " failed",
				rsaName:   "SERVFAIL",
				spfName:   "failed",
				dmarcName: "failed",
			},
		},
		{
			name:     "server failure for one name",
			rcodes:   map[string]int{dmarcName + ".": dns.RcodeServerFailure},
			problems: map[string]string{dmarcName: "the lookup of TXT _dmarc.example.com failed: name server 127.0.0.1:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := published()
			if tt.edit != nil {
				tt.edit(z)
			}
			var lines []string
			for name, vals := range z {
				for _, v := range vals {
					lines = append(lines, txtLine(name, v))
				}
			}
			srv := &testDNS{rrs: zone(t, append(lines, tt.raw...)...), rcodes: tt.rcodes, truncateUDP: tt.truncateUDP}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			findings := Check(ctx, srv.start(t), records)
			if len(findings) != len(records) {
				t.Fatalf("%d findings for %d records", len(findings), len(records))
			}
			for i, f := range findings {
				name := records[i].Name
				if f.Record != records[i] {
					t.Errorf("finding %d is about %s, want %s", i, f.Record.Name, name)
				}
				want, bad := tt.problems[name]
				switch {
				case !bad && !f.OK:
					t.Errorf("%s: not OK: %s (fix: %s); found %q", name, f.Problem, f.Fix, f.Found)
				case !bad && (f.Problem != "" || f.Fix != ""):
					t.Errorf("%s: OK with problem %q, fix %q", name, f.Problem, f.Fix)
				case bad && f.OK:
					t.Errorf("%s: OK, want the problem %q; found %q", name, want, f.Found)
				case bad && !strings.Contains(f.Problem, want):
					t.Errorf("%s: problem %q, want it to say %q", name, f.Problem, want)
				case bad && f.Fix == "":
					t.Errorf("%s: problem %q comes without a fix", name, f.Problem)
				}
				if fix, ok := tt.fixes[name]; ok && !strings.Contains(f.Fix, fix) {
					t.Errorf("%s: fix %q, want it to say %q", name, f.Fix, fix)
				}
			}
		})
	}
}

// TestCheckFound checks that a value split into several strings in DNS
// is reported as the one value it is.
func TestCheckFound(t *testing.T) {
	keys := testKeys(t)
	rsaTXT, err := keys[1].TXT()
	if err != nil {
		t.Fatal(err)
	}
	srv := &testDNS{rrs: zone(t, txtLine(rsaName, rsaTXT))}
	want := Record{Name: rsaName, Type: "TXT", Value: rsaTXT}
	f := Check(context.Background(), srv.start(t), []Record{want})[0]
	if !f.OK || len(f.Found) != 1 || f.Found[0] != rsaTXT {
		t.Errorf("Check = OK %v, found %q; want OK, found the whole value %q", f.OK, f.Found, rsaTXT)
	}
}

func TestCheckUnreachable(t *testing.T) {
	records := []Record{{Name: "_dmarc.example.com", Type: "TXT", Value: "v=DMARC1; p=quarantine"}}
	tests := []struct {
		name     string
		resolver func(t *testing.T) string
		timeout  time.Duration
		want     string
	}{
		{"nothing listening", closedPort, 5 * time.Second, "connection refused"},
		{"no answer", func(t *testing.T) string {
			return (&testDNS{rcodes: map[string]int{"*": drop}}).start(t)
		}, 200 * time.Millisecond, "deadline exceeded"},
		{"not host:port", func(*testing.T) string { return "127.0.0.1" }, time.Second, "want host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			f := Check(ctx, tt.resolver(t), records)[0]
			if f.OK || !strings.Contains(f.Problem, "the lookup of TXT _dmarc.example.com failed") || !strings.Contains(f.Problem, tt.want) {
				t.Errorf("Check = OK %v, problem %q; want a failed lookup saying %q", f.OK, f.Problem, tt.want)
			}
		})
	}
}
