package firewall

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	cases := []struct {
		spec     string
		proto    string
		from, to uint16
		problem  string // part of the error; "" for none
	}{
		{"5432/tcp", "tcp", 5432, 5432, ""},
		{"53/UDP", "udp", 53, 53, ""},
		{"443", "tcp", 443, 443, ""},
		{"8000-8100/tcp", "tcp", 8000, 8100, ""},
		{"1-65535/udp", "udp", 1, 65535, ""},
		{"0/tcp", "", 0, 0, "from 1 to 65535"},
		{"65536/tcp", "", 0, 0, "from 1 to 65535"},
		{"http/tcp", "", 0, 0, "from 1 to 65535"},
		{"22/sctp", "", 0, 0, "not tcp or udp"},
		{"9000-8000/tcp", "", 0, 0, "write 8000-9000"},
		{"", "", 0, 0, "from 1 to 65535"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			proto, from, to, err := ParsePorts(c.spec)
			if c.problem != "" {
				if err == nil || !strings.Contains(err.Error(), c.problem) || !strings.Contains(err.Error(), `"`+c.spec+`"`) {
					t.Fatalf("error %v, want one naming %q and saying %q", err, c.spec, c.problem)
				}
				return
			}
			if err != nil || proto != c.proto || from != c.from || to != c.to {
				t.Fatalf("got %s %d-%d, %v; want %s %d-%d", proto, from, to, err, c.proto, c.from, c.to)
			}
		})
	}
}

func TestParseSource(t *testing.T) {
	cases := []struct {
		in, want, problem string
	}{
		{"203.0.113.7", "203.0.113.7/32", ""},
		{"203.0.113.0/24", "203.0.113.0/24", ""},
		{"2001:db8::7", "2001:db8::7/128", ""},
		{"2001:db8::/48", "2001:db8::/48", ""},
		{"::ffff:203.0.113.7", "203.0.113.7/32", ""},
		{"::ffff:203.0.113.0/120", "203.0.113.0/24", ""},
		{"203.0.113.7/24", "", "write 203.0.113.0/24"},
		{"fe80::1%eth0", "", "not an IP address"},
		{"example.com", "", "not an IP address"},
		{"10.0.0.0/33", "", "not a CIDR prefix"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			p, err := ParseSource(c.in)
			if c.problem != "" {
				if err == nil || !strings.Contains(err.Error(), c.problem) {
					t.Fatalf("error %v, want one saying %q", err, c.problem)
				}
				return
			}
			if err != nil || p.String() != c.want {
				t.Fatalf("got %v, %v; want %s", p, err, c.want)
			}
		})
	}
}

func rule(spec string, sources ...string) Rule {
	proto, from, to, err := ParsePorts(spec)
	if err != nil {
		panic(err)
	}
	r := Rule{Proto: proto, From: from, To: to}
	for _, s := range sources {
		r.Sources = append(r.Sources, netip.MustParsePrefix(s))
	}
	return r
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name    string
		rules   []Rule
		problem string
	}{
		{"fine", []Rule{rule("22/tcp"), rule("80/tcp"), rule("5432/tcp", "203.0.113.0/24"), rule("5432/udp")}, ""},
		{"same port, other sources", []Rule{rule("5432/tcp", "203.0.113.0/24"), rule("5432/tcp", "198.51.100.0/24")}, ""},
		{"duplicate", []Rule{rule("22/tcp"), rule("22/tcp")}, "rule 1 (22/tcp) already opens what rule 2 (22/tcp) opens"},
		{"range covers port", []Rule{rule("8080/tcp"), rule("8000-8100/tcp")}, "rule 2 (8000-8100/tcp) already opens what rule 1 (8080/tcp) opens"},
		{"any covers listed", []Rule{rule("5432/tcp", "203.0.113.0/24"), rule("5432/tcp")}, "drop rule 1"},
		{"wider prefix covers", []Rule{rule("5432/tcp", "203.0.0.0/16"), rule("5432/tcp", "203.0.113.0/24")}, "drop rule 2"},
		{"bad protocol", []Rule{{Proto: "icmp", From: 1, To: 1}}, "is not tcp or udp"},
		{"bad range", []Rule{{Proto: "tcp", From: 9, To: 8}}, "ascending range"},
		{"host bits", []Rule{{Proto: "tcp", From: 1, To: 1, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}}, "write it as 10.0.0.0/8"},
		{"quote in comment", []Rule{{Proto: "tcp", From: 1, To: 1, Comment: `a"b`}}, "plain comment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(c.rules)
			if c.problem == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.problem) {
				t.Fatalf("error %v, want one saying %q", err, c.problem)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	rules := []Rule{rule("22/tcp"), rule("5432/tcp", "203.0.113.0/24", "2001:db8::/48"), rule("8000-8100/udp")}
	cases := []struct {
		proto string
		addr  string
		port  uint16
		want  bool
	}{
		{"tcp", "198.51.100.1", 22, true},
		{"tcp", "198.51.100.1", 23, false},
		{"udp", "198.51.100.1", 22, false},
		{"tcp", "203.0.113.9", 5432, true},
		{"tcp", "::ffff:203.0.113.9", 5432, true},
		{"tcp", "2001:db8::1", 5432, true},
		{"tcp", "198.51.100.1", 5432, false},
		{"udp", "198.51.100.1", 8050, true},
	}
	for _, c := range cases {
		if got := Allows(rules, c.proto, netip.MustParseAddr(c.addr), c.port); got != c.want {
			t.Errorf("Allows(%s %s:%d) = %v, want %v", c.proto, c.addr, c.port, got, c.want)
		}
	}
}

func TestRenderNamesOnlyMoatsTable(t *testing.T) {
	script := Render([]Rule{rule("22/tcp"), rule("5432/tcp", "203.0.113.0/24", "2001:db8::/48")}, []Ban{{Prefix: netip.MustParsePrefix("198.51.100.7/32")}})
	for line := range strings.Lines(script) {
		f := strings.Fields(line)
		for i, w := range f {
			if w == "table" && i+2 < len(f) && (f[i+1] != "inet" || strings.Trim(f[i+2], "{}") != Table) {
				t.Errorf("the script names another table: %q", line)
			}
		}
	}
	for _, want := range []string{
		"policy drop", "ct state established,related accept", "198.51.100.7/32",
		`ip saddr { 203.0.113.0/24 } tcp dport 5432 accept`, `ip6 saddr { 2001:db8::/48 } tcp dport 5432 accept`,
		"ct state new ct status dnat jump published", "meta l4proto tcp ct original proto-dst 22 return",
		"packet-too-big", "nd-neighbor-solicit",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("the script lacks %q:\n%s", want, script)
		}
	}
}

func TestParseSet(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "ban4", "table": "moat", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [
		"192.0.2.1",
		{"prefix": {"addr": "198.51.100.0", "len": 24}},
		{"elem": {"val": "203.0.113.7", "timeout": 600, "expires": 598}},
		{"elem": {"val": "203.0.113.8", "timeout": 2, "expires": 0}},
		{"elem": {"val": {"prefix": {"addr": "10.9.0.0", "len": 16}}, "timeout": 60, "expires": 30}},
		{"range": ["10.3.0.1", "10.3.0.9"]}
	]}}]}`
	bans, err := parseSet(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range bans {
		got = append(got, b.Prefix.String()+" "+b.Expires.String())
	}
	want := "192.0.2.1/32 0s, 198.51.100.0/24 0s, 203.0.113.7/32 9m58s, 203.0.113.8/32 1s, 10.9.0.0/16 30s"
	if strings.Join(got, ", ") != want {
		t.Errorf("parsed %s\nwant   %s", strings.Join(got, ", "), want)
	}
}
