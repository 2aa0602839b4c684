package config

import (
	"strings"
	"testing"
)

func TestFirewallValidate(t *testing.T) {
	const fixPort = "write one port like 5432/tcp, or a range like 8000-8100/tcp"
	tests := []struct {
		name  string
		rules []FirewallRule
		want  []wantErr
	}{
		{"good", []FirewallRule{{Port: "22/tcp"}, {Port: "5432/tcp", From: []string{"203.0.113.0/24", "2001:db8::/48"}, Comment: "office"}, {Port: "60000-61000/udp"}}, nil},
		{"bad port", []FirewallRule{{Port: "70000/tcp"}}, []wantErr{{"firewall.rules[0].port", "70000/tcp", "from 1 to 65535", fixPort}}},
		{"bad protocol", []FirewallRule{{Port: "53/icmp"}}, []wantErr{{"firewall.rules[0].port", "53/icmp", "not tcp or udp", "write PORT/tcp or PORT/udp, like 5432/tcp"}}},
		{"bad source", []FirewallRule{{Port: "22/tcp", From: []string{"10.0.0.1/8"}}}, []wantErr{{"firewall.rules[0].from[0]", "10.0.0.1/8", "bits set beyond the prefix", "write 10.0.0.0/8"}}},
		{"bad comment", []FirewallRule{{Port: "22/tcp", Comment: "a\nb"}}, []wantErr{{"firewall.rules[0].comment", "a\nb", "printable ASCII", "use a short plain comment, like office"}}},
		{"non-ASCII comment", []FirewallRule{{Port: "22/tcp", Comment: "büro"}}, []wantErr{{"firewall.rules[0].comment", "büro", "printable ASCII", "use a short plain comment, like office"}}},
		{"duplicate", []FirewallRule{{Port: "22/tcp"}, {Port: "22/tcp"}}, []wantErr{{"firewall.rules[1]", "22/tcp", "firewall.rules[0] (22/tcp)", "remove one of the two"}}},
		{"range covers", []FirewallRule{{Port: "8080/tcp", From: []string{"203.0.113.0/24"}}, {Port: "8000-8100/tcp"}}, []wantErr{{"firewall.rules[0]", "8080/tcp from 203.0.113.0/24", "firewall.rules[1] (8000-8100/tcp)", "remove one of the two"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkValid(t, State{Firewall: Firewall{Rules: tt.rules}}, tt.want) })
	}
}

func TestFirewallNormalizeAndConvert(t *testing.T) {
	s := State{Firewall: Firewall{Rules: []FirewallRule{{Port: "443"}, {Port: "5432/TCP", From: []string{"::ffff:203.0.113.7", "2001:db8::1"}}}}}
	s.Normalize()
	if got := s.Firewall.Rules[0].Port + " " + s.Firewall.Rules[1].Port + " " + strings.Join(s.Firewall.Rules[1].From, ","); got != "443/tcp 5432/tcp 203.0.113.7/32,2001:db8::1/128" {
		t.Errorf("normalized to %q", got)
	}
	rules, err := s.FirewallRules()
	if err != nil || len(rules) != 2 || rules[1].String() != "5432/tcp from 203.0.113.7/32,2001:db8::1/128" {
		t.Errorf("FirewallRules() = %v, %v", rules, err)
	}
	c := s.Clone()
	c.Firewall.Rules[1].From[0] = "changed"
	if s.Firewall.Rules[1].From[0] == "changed" {
		t.Error("Clone shares the firewall's sources")
	}
	next := s.Clone()
	next.Firewall.Rules = next.Firewall.Rules[:1]
	if plan := Diff(s, next); len(plan) != 1 || plan[0].Object != "firewall" {
		t.Errorf("Diff = %v, want one firewall step", plan)
	}
}

func TestAppPorts(t *testing.T) {
	app := func(ports ...AppPort) App {
		return App{Name: "db", Domains: []string{"db.example.com"}, Upstream: "http://127.0.0.1:1", Ports: ports}
	}
	tests := []struct {
		name  string
		s     State
		want  []wantErr
		rules string // FirewallRules, when valid
	}{
		{"kinds", State{Firewall: Firewall{Rules: []FirewallRule{{Port: "22/tcp"}}}, Apps: []App{app(
			AppPort{Port: "5432", Access: "private", From: []string{"203.0.113.0/24"}},
			AppPort{Port: "27015/udp", Access: "Public"},
			AppPort{Port: "6379/tcp"},
		)}}, nil, "22/tcp; 5432/tcp from 203.0.113.0/24; 27015/udp; 6379/tcp from 10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fc00::/7,fe80::/10"},
		{"bad access", State{Apps: []App{app(AppPort{Port: "5432/tcp", Access: "secret"})}},
			[]wantErr{{"apps[0].ports[0].access", "secret", "not public, private or internal", "write public (anyone), private (with from) or internal (loopback and private networks)"}}, ""},
		{"private without sources", State{Apps: []App{app(AppPort{Port: "5432/tcp", Access: "private"})}},
			[]wantErr{{"apps[0].ports[0].from", "", "private port", "list who may connect, like from: [203.0.113.0/24], or make the port internal"}}, ""},
		{"sources on a public port", State{Apps: []App{app(AppPort{Port: "5432/tcp", Access: "public", From: []string{"203.0.113.0/24"}})}},
			[]wantErr{{"apps[0].ports[0].from", "203.0.113.0/24", "private ports only", "make the port private, or remove from"}}, ""},
		{"bad port", State{Apps: []App{app(AppPort{Port: "0/tcp"})}},
			[]wantErr{{"apps[0].ports[0].port", "0/tcp", "from 1 to 65535", "write one port like 5432/tcp, or a range like 8000-8100/tcp"}}, ""},
		{"app port repeats a rule", State{Firewall: Firewall{Rules: []FirewallRule{{Port: "5432/tcp"}}}, Apps: []App{app(AppPort{Port: "5432/tcp", Access: "public"})}},
			[]wantErr{{"apps[0].ports[0]", "5432/tcp", "firewall.rules[0] (5432/tcp)", "remove one of the two"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Normalize()
			err := tt.s.Validate()
			if tt.want != nil {
				checkErrors(t, err, tt.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rules, err := tt.s.FirewallRules()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rules {
				got = append(got, r.String())
			}
			if strings.Join(got, "; ") != tt.rules {
				t.Errorf("rules:\n %s\nwant\n %s", strings.Join(got, "; "), tt.rules)
			}
		})
	}
}
