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

// normalize writes ports and sources the one way moat writes them
// ("5432/tcp", "203.0.113.7/32"), leaving what does not parse as it is for
// validate to refuse.
func (f *Firewall) normalize() {
	for i := range f.Rules {
		r := &f.Rules[i]
		if proto, from, to, err := firewall.ParsePorts(r.Port); err == nil {
			r.Port = firewall.Rule{Proto: proto, From: from, To: to}.String()
		}
		for j, s := range r.From {
			if p, err := firewall.ParseSource(s); err == nil {
				r.From[j] = p.String()
			}
		}
	}
}

// validate checks each rule, then the rules against each other.
func (f Firewall) validate(add func(field, value, problem, fix string)) []error {
	bad := false
	for i, r := range f.Rules {
		at := fmt.Sprintf("firewall.rules[%d]", i)
		if _, _, _, err := firewall.ParsePorts(r.Port); err != nil {
			var fe *firewall.Error
			if errors.As(err, &fe) {
				add(at+".port", r.Port, fe.Problem, fe.Fix)
			}
			bad = true
		}
		for j, s := range r.From {
			if _, err := firewall.ParseSource(s); err != nil {
				var fe *firewall.Error
				if errors.As(err, &fe) {
					add(fmt.Sprintf("%s.from[%d]", at, j), s, fe.Problem, fe.Fix)
				}
				bad = true
			}
		}
		if strings.ContainsAny(r.Comment, "\"\\\r\n") || len(r.Comment) > 128 {
			add(at+".comment", r.Comment, "has quotes, backslashes or line breaks, or is longer than 128 characters", "use a short plain comment, like office")
			bad = true
		}
	}
	if bad {
		return nil
	}
	rules, err := f.rules()
	if err != nil {
		return []error{err} // cannot happen: each rule parsed above
	}
	for i, a := range rules {
		for j := i + 1; j < len(rules); j++ {
			b := rules[j]
			switch {
			case firewall.Covers(a, b):
				add(fmt.Sprintf("firewall.rules[%d]", j), b.String(), fmt.Sprintf("opens nothing that firewall.rules[%d] (%s) does not open already", i, a), "remove one of the two")
			case firewall.Covers(b, a):
				add(fmt.Sprintf("firewall.rules[%d]", i), a.String(), fmt.Sprintf("opens nothing that firewall.rules[%d] (%s) does not open already", j, b), "remove one of the two")
			}
		}
	}
	return nil
}

// rules converts the rules for package firewall.
func (f Firewall) rules() ([]firewall.Rule, error) {
	out := make([]firewall.Rule, 0, len(f.Rules))
	for i, r := range f.Rules {
		proto, from, to, err := firewall.ParsePorts(r.Port)
		if err != nil {
			return nil, fmt.Errorf("firewall.rules[%d].port: %w", i, err)
		}
		fr := firewall.Rule{Proto: proto, From: from, To: to, Comment: r.Comment}
		for j, s := range r.From {
			p, err := firewall.ParseSource(s)
			if err != nil {
				return nil, fmt.Errorf("firewall.rules[%d].from[%d]: %w", i, j, err)
			}
			fr.Sources = append(fr.Sources, p)
		}
		out = append(out, fr)
	}
	return out, nil
}

// FirewallRules is the firewall's rules as package firewall takes them.
// The state must be valid.
func (s State) FirewallRules() ([]firewall.Rule, error) {
	return s.Firewall.rules()
}
