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
		{"bad comment", []FirewallRule{{Port: "22/tcp", Comment: "a\nb"}}, []wantErr{{"firewall.rules[0].comment", "a\nb", "line breaks", "use a short plain comment, like office"}}},
		{"duplicate", []FirewallRule{{Port: "22/tcp"}, {Port: "22/tcp"}}, []wantErr{{"firewall.rules[1]", "22/tcp", "firewall.rules[0] (22/tcp)", "remove one of the two"}}},
		{"range covers", []FirewallRule{{Port: "8080/tcp", From: []string{"203.0.113.0/24"}}, {Port: "8000-8100/tcp"}}, []wantErr{{"firewall.rules[0]", "8080/tcp from 203.0.113.0/24", "firewall.rules[1] (8000-8100/tcp)", "remove one of the two"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := State{Firewall: Firewall{Rules: tt.rules}}
			s.Normalize()
			err := s.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkErrors(t, err, tt.want)
		})
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
