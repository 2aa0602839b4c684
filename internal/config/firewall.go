package config

import (
	"errors"
	"fmt"
	"strings"

	"moat/internal/firewall"
)

// Firewall is the network firewall's desired state: the ports open to
// the world or to listed sources. Everything else inbound is dropped.
type Firewall struct {
	// Off removes moat's nftables table, leaving the server open to
	// whatever the other tables allow, but keeps the rules for later.
	Off bool `yaml:"off,omitempty" json:"off,omitempty"`
	// Rules open ports.
	Rules []FirewallRule `yaml:"rules,omitempty" json:"rules,omitempty"`
}

// FirewallRule opens a port or a range, to anyone or to the sources in
// From.
type FirewallRule struct {
	// Port is "5432/tcp", "8000-8100/udp", or a bare port for tcp.
	Port string `yaml:"port" json:"port"`
	// From lists addresses and CIDR prefixes; empty means any source.
	From    []string `yaml:"from,omitempty" json:"from,omitempty"`
	Comment string   `yaml:"comment,omitempty" json:"comment,omitempty"`
}

// AppPort is a port an app listens on, and who may reach it.
type AppPort struct {
	// Port is "5432/tcp", "27015/udp", a range, or a bare port for tcp.
	Port string `yaml:"port" json:"port"`
	// Access is public (anyone), private (the sources in From) or
	// internal (the default: loopback and private networks only).
	Access string `yaml:"access,omitempty" json:"access,omitempty"`
	// From lists who may reach a private port.
	From []string `yaml:"from,omitempty" json:"from,omitempty"`
}

// The access levels of an app's port.
const (
	Public   = "public"
	Private  = "private"
	Internal = "internal"
)

func (f Firewall) clone() Firewall {
	c := f
	c.Rules = make([]FirewallRule, len(f.Rules))
	for i, r := range f.Rules {
		c.Rules[i] = r
		c.Rules[i].From = append([]string(nil), r.From...)
	}
	if f.Rules == nil {
		c.Rules = nil
	}
	return c
}

// normalizeFirewall writes ports and sources the one way moat writes them
// ("5432/tcp", "203.0.113.7/32"), in the firewall's rules and the apps'
// ports, leaving what does not parse as it is for validate to refuse.
func (s *State) normalizeFirewall() {
	for i := range s.Firewall.Rules {
		r := &s.Firewall.Rules[i]
		r.Port = normalPort(r.Port)
		normalSources(r.From)
	}
	for i := range s.Apps {
		for j := range s.Apps[i].Ports {
			p := &s.Apps[i].Ports[j]
			p.Port = normalPort(p.Port)
			p.Access = strings.ToLower(strings.TrimSpace(p.Access))
			if p.Access == "" {
				p.Access = Internal
			}
			normalSources(p.From)
		}
	}
}

func normalPort(spec string) string {
	if proto, from, to, err := firewall.ParsePorts(spec); err == nil {
		return firewall.Rule{Proto: proto, From: from, To: to}.String()
	}
	return spec
}

func normalSources(from []string) {
	for j, s := range from {
		if p, err := firewall.ParseSource(s); err == nil {
			from[j] = p.String()
		}
	}
}

// validateFirewall checks each rule and each app's port, then all of them
// against each other.
func (s State) validateFirewall(add func(field, value, problem, fix string)) {
	bad := false
	checkPort := func(at, spec string) {
		if _, _, _, err := firewall.ParsePorts(spec); err != nil {
			var fe *firewall.Error
			if errors.As(err, &fe) {
				add(at+".port", spec, fe.Problem, fe.Fix)
			}
			bad = true
		}
	}
	checkFrom := func(at string, from []string) {
		for j, src := range from {
			if _, err := firewall.ParseSource(src); err != nil {
				var fe *firewall.Error
				if errors.As(err, &fe) {
					add(fmt.Sprintf("%s.from[%d]", at, j), src, fe.Problem, fe.Fix)
				}
				bad = true
			}
		}
	}
	for i, r := range s.Firewall.Rules {
		at := fmt.Sprintf("firewall.rules[%d]", i)
		checkPort(at, r.Port)
		checkFrom(at, r.From)
		if !firewall.PlainText(r.Comment) {
			add(at+".comment", r.Comment, "has quotes, backslashes or characters other than printable ASCII, or is longer than 128 characters", "use a short plain comment, like office")
			bad = true
		}
	}
	for i, a := range s.Apps {
		for j, p := range a.Ports {
			at := fmt.Sprintf("apps[%d].ports[%d]", i, j)
			checkPort(at, p.Port)
			checkFrom(at, p.From)
			switch {
			case p.Access != Public && p.Access != Private && p.Access != Internal:
				add(at+".access", p.Access, "is not public, private or internal", "write public (anyone), private (with from) or internal (loopback and private networks)")
				bad = true
			case p.Access == Private && len(p.From) == 0:
				add(at+".from", "", "is empty, and a private port is open to the sources listed here only", "list who may connect, like from: [203.0.113.0/24], or make the port internal")
				bad = true
			case p.Access != Private && len(p.From) > 0:
				add(at+".from", strings.Join(p.From, ","), "is for private ports only", "make the port private, or remove from")
				bad = true
			}
		}
	}
	if bad {
		return
	}
	rules, fields := s.firewallRules()
	for i, a := range rules {
		for j := i + 1; j < len(rules); j++ {
			b := rules[j]
			switch {
			case firewall.Covers(a, b):
				add(fields[j], b.String(), fmt.Sprintf("opens nothing that %s (%s) does not open already", fields[i], a), "remove one of the two")
			case firewall.Covers(b, a):
				add(fields[i], a.String(), fmt.Sprintf("opens nothing that %s (%s) does not open already", fields[j], b), "remove one of the two")
			}
		}
	}
}

// firewallRules converts the firewall's rules and the apps' ports for
// package firewall, with the field each came from. The state must be
// valid.
func (s State) firewallRules() ([]firewall.Rule, []string) {
	var rules []firewall.Rule
	var fields []string
	for i, r := range s.Firewall.Rules {
		proto, from, to, _ := firewall.ParsePorts(r.Port)
		fr := firewall.Rule{Proto: proto, From: from, To: to, Comment: r.Comment}
		for _, src := range r.From {
			p, _ := firewall.ParseSource(src)
			fr.Sources = append(fr.Sources, p)
		}
		rules, fields = append(rules, fr), append(fields, fmt.Sprintf("firewall.rules[%d]", i))
	}
	for i, a := range s.Apps {
		for j, p := range a.Ports {
			proto, from, to, _ := firewall.ParsePorts(p.Port)
			fr := firewall.Rule{Proto: proto, From: from, To: to, App: a.Name, Comment: p.Access}
			switch p.Access {
			case Private:
				for _, src := range p.From {
					pfx, _ := firewall.ParseSource(src)
					fr.Sources = append(fr.Sources, pfx)
				}
			case Internal, "":
				fr.Sources = firewall.PrivateNetworks()
			}
			rules, fields = append(rules, fr), append(fields, fmt.Sprintf("apps[%d].ports[%d]", i, j))
		}
	}
	return rules, fields
}

// FirewallRules is every rule the firewall puts in force, as package
// firewall takes them: the firewall's own, then the apps' ports. It fails
// on a state that does not validate.
func (s State) FirewallRules() ([]firewall.Rule, error) {
	var errs []error
	s.validateFirewall(func(field, value, problem, fix string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Problem: problem, Fix: fix})
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	rules, _ := s.firewallRules()
	return rules, nil
}
