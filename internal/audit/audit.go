// Package audit reads the host back (what listens where, sshd's
// effective settings, moat's firewall in the kernel) and judges it:
// each check that fails is a finding in plain words, with why it
// matters and the exact fix, and the findings' weights make a score.
package audit

import (
	"slices"
	"time"

	"moat/internal/certs"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/updates"
)

// Severity is how much a finding matters.
type Severity string

// The severities, and the weight each takes from the score.
const (
	High   Severity = "high"
	Medium Severity = "medium"
	Low    Severity = "low"
	// Info is a hardening step that most guides, Lynis's among them,
	// suggest, with little risk behind it.
	Info Severity = "info"
)

var weights = map[Severity]int{High: 20, Medium: 8, Low: 3, Info: 1}

// Finding is one thing wrong: which check found it, about what, in
// plain words, why it matters, and the fix.
type Finding struct {
	// Check is the check's ID, like ssh.password; Subject what it is
	// about, like 0.0.0.0:5432 (several findings of one check differ
	// in it).
	Check    string   `json:"check"`
	Subject  string   `json:"subject,omitempty"`
	Severity Severity `json:"severity"`
	Weight   int      `json:"weight"`
	Finding  string   `json:"finding"`
	Why      string   `json:"why"`
	// Fix is the command to run, or moat audit fix CHECK when moat can
	// fix it itself (Fixable).
	Fix     string `json:"fix"`
	Fixable bool   `json:"fixable,omitempty"`
}

// Host is what the observers read: each part nil or empty (with its
// error) when it could not be read, and then judged by no check.
type Host struct {
	Listeners []Listener
	// Own are the ports moat and sshd answer on by design (443/tcp,
	// the SSH port), with who: a listener there is no finding.
	Own map[string]string
	// SSH is what sshd's audit found against moat ssh harden's settings
	// (sshd.Manager.Audit); nil when moat does not manage sshd.
	SSH *[]sshd.Finding
	// SSHD is sshd's effective configuration for root (sshd -T),
	// for the settings moat ssh harden leaves alone; nil when unknown.
	SSHD map[string][]string
	// Firewall is moat's firewall as the kernel has it.
	Firewall *Firewall
	// Certificates are the domains' certificates; nil when no daemon
	// runs.
	Certificates []certs.Status
	// Guard is the brute-force guard; nil when no daemon runs.
	Guard *Guard
	// Docker are the Docker Engine's containers; nil when no Docker runs.
	Docker []Container
	// Updates is how unattended updates are set up; nil when apt could
	// not be read.
	Updates *updates.Status
	// Problems say what could not be read, and why.
	Problems []string
	// At is when the audit runs (Run sets it).
	At time.Time
}

// Guard is the state of the brute-force guard.
type Guard struct {
	// Off says the owner turned the guard off; JailsOff names the
	// built-in jails turned off (sshd, moat, mail).
	Off      bool
	JailsOff []string
}

// Firewall is the state of moat's firewall.
type Firewall struct {
	// Off says the owner turned it off; Active that moat's table is in
	// the kernel; Pending that an apply waits for its confirmation.
	Off, Active, Pending bool
	// Rules are the rules in force (or stored, when moat does not know).
	Rules []firewall.Rule
	// Drift are the differences between the kernel's table and what
	// moat applied, as nft lines; nil when there are none.
	Drift []string
}

// Reaches reports whether the firewall lets anyone on the internet
// reach port/proto: there is no firewall, or a rule opens it to any
// source.
func (f *Firewall) Reaches(port uint16, proto string) bool {
	if f == nil || f.Off || !f.Active {
		return true
	}
	for _, r := range f.Rules {
		if r.Proto == proto && r.From <= port && port <= r.To && len(r.Sources) == 0 {
			return true
		}
	}
	return false
}

// Report is an audit: the findings, worst first, the checks that
// passed, and the score.
type Report struct {
	At       time.Time `json:"at"`
	Score    int       `json:"score"`
	Findings []Finding `json:"findings"`
	// Passed are the IDs of the checks that ran and found nothing.
	Passed []string `json:"passed"`
	// Problems say what could not be looked at, and why.
	Problems []string `json:"problems,omitempty"`
}

// Run judges h with every check.
func Run(h Host, at time.Time) Report {
	h.At = at
	r := Report{At: at, Findings: []Finding{}, Passed: []string{}, Problems: h.Problems}
	for _, c := range checks {
		if !c.applies(h) {
			continue
		}
		found := c.run(h)
		if len(found) == 0 {
			r.Passed = append(r.Passed, c.id)
			continue
		}
		for _, f := range found {
			f.Check = c.id
			if f.Severity == "" {
				f.Severity = c.severity
			}
			f.Weight = weights[f.Severity]
			r.Findings = append(r.Findings, f)
		}
	}
	order := map[Severity]int{High: 0, Medium: 1, Low: 2, Info: 3}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return order[a.Severity] - order[b.Severity] })
	r.Score = Score(r.Findings)
	return r
}

// Score is 100 less the findings' weights, never below 0.
func Score(fs []Finding) int {
	s := 100
	for _, f := range fs {
		s -= f.Weight
	}
	return max(s, 0)
}

// Regressions are the findings of now that were not in before, by check
// and subject: what got worse.
func Regressions(before, now Report) []Finding {
	seen := map[[2]string]bool{}
	for _, f := range before.Findings {
		seen[[2]string{f.Check, f.Subject}] = true
	}
	var out []Finding
	for _, f := range now.Findings {
		if !seen[[2]string{f.Check, f.Subject}] {
			out = append(out, f)
		}
	}
	return out
}
