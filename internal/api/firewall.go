package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/store"
)

// Firewall is the running daemon's hold on the kernel's firewall; nil
// when the daemon does not manage it (the demo) or no daemon runs.
// *firewall.Manager is one.
type Firewall interface {
	Apply(ctx context.Context, rules []firewall.Rule) error
	ApplyConfirm(ctx context.Context, next, previous []firewall.Rule, wasActive bool, d time.Duration, done func(error)) error
	Confirm() error
	Off(ctx context.Context) error
	Active(ctx context.Context) (bool, error)
	// Pending says whether an apply waits for its confirmation, and
	// when it rolls back.
	Pending() (deadline time.Time, pending bool)
	InForce() ([]firewall.Rule, bool)
	// Drift is how the kernel's table differs from what was applied.
	Drift(ctx context.Context, bans []netip.Prefix) ([]string, bool, error)
}

// FirewallStatus is the firewall as GET /v1/firewall reports it.
type FirewallStatus struct {
	Rules []config.FirewallRule `json:"rules"`
	// AppPorts are the rules the apps' ports add, as "5432/tcp from
	// 10.0.0.0/8,…" with the app's name.
	AppPorts []AppPortRule `json:"app_ports,omitempty"`
	Off      bool          `json:"off,omitempty"`
	// Managed is false when no daemon runs, or it does not manage the
	// firewall: the rules are then only stored.
	Managed bool `json:"managed"`
	// Active says that moat's table is in the kernel.
	Active bool `json:"active"`
	// Pending says that an apply waits for its confirmation, and
	// RollbackAt when the rules in force before come back without it.
	Pending    bool       `json:"pending,omitempty"`
	RollbackAt *time.Time `json:"rollback_at,omitempty"`
	// Problem says why the kernel's state could not be read (nft
	// missing, say).
	Problem string `json:"problem,omitempty"`
	// Plan is what applying the stored rules would change.
	Plan FirewallPlan `json:"plan"`
}

// AppPortRule is a rule an app's port adds.
type AppPortRule struct {
	App    string `json:"app"`
	Rule   string `json:"rule"`
	Access string `json:"access"`
}

// FirewallPlan lists the rules an apply would add and remove, as
// "5432/tcp from 203.0.113.0/24"; Unknown when what is in force is not
// known (the daemon has not applied anything since it started).
type FirewallPlan struct {
	Add     []string `json:"add,omitempty"`
	Remove  []string `json:"remove,omitempty"`
	Unknown bool     `json:"unknown,omitempty"`
}

// ApplyRequest is the body of POST /v1/firewall/apply.
type ApplyRequest struct {
	// ConfirmWithin, like "60s", applies with a rollback unless POST
	// /v1/firewall/confirm comes in time.
	ConfirmWithin string `json:"confirm_within,omitempty"`
	// Force skips the check that the caller's SSH connection survives.
	Force bool `json:"force,omitempty"`
	// SSHConnection is the caller's SSH_CONNECTION, when it runs over SSH.
	SSHConnection string `json:"ssh_connection,omitempty"`
	// SSHPorts are the ports sshd listens on (from its configuration):
	// every session open to them must survive the new rules.
	SSHPorts []uint16 `json:"ssh_ports,omitempty"`
}

// RuleRequest names a rule: the body of POST and DELETE
// /v1/firewall/rules.
type RuleRequest = config.FirewallRule

func (s *Server) firewallRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/firewall", s.firewallStatus)
	mux.HandleFunc("POST /v1/firewall/rules", s.allow)
	mux.HandleFunc("DELETE /v1/firewall/rules", s.deny)
	mux.HandleFunc("POST /v1/firewall/apply", s.firewallApply)
	mux.HandleFunc("POST /v1/firewall/confirm", s.firewallConfirm)
	mux.HandleFunc("POST /v1/firewall/off", s.firewallOff)
	mux.HandleFunc("POST /v1/firewall/on", s.firewallOn)
}

// firewall returns the daemon's firewall, or nil.
func (s *Server) firewall() Firewall {
	if s.Runtime == nil {
		return nil
	}
	return s.Runtime.Firewall()
}

var errUnmanaged = inputError{errors.New("no running moat daemon manages the firewall here: the rules are stored, and `moat serve` applies them when it starts")}

func (s *Server) firewallStatus(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := FirewallStatus{Rules: st.Firewall.Rules, Off: st.Firewall.Off}
	if out.Rules == nil {
		out.Rules = []config.FirewallRule{}
	}
	fw := s.firewall()
	want, err := st.FirewallRules()
	if err != nil {
		s.fail(w, err)
		return
	}
	for _, r := range want[len(st.Firewall.Rules):] {
		out.AppPorts = append(out.AppPorts, AppPortRule{App: r.App, Rule: r.String(), Access: r.Comment})
	}
	if st.Firewall.Off {
		want = nil
	}
	if fw == nil {
		out.Plan = plan(want, nil, false)
		writeJSON(w, http.StatusOK, out)
		return
	}
	out.Managed = true
	if at, ok := fw.Pending(); ok {
		out.Pending, out.RollbackAt = true, &at
	}
	if out.Active, err = fw.Active(r.Context()); err != nil {
		out.Problem = err.Error() // the stored rules are still worth showing
	}
	inForce, known := fw.InForce()
	out.Plan = plan(want, inForce, known)
	writeJSON(w, http.StatusOK, out)
}

// plan compares the rules wanted with those in force.
func plan(want, inForce []firewall.Rule, known bool) FirewallPlan {
	p := FirewallPlan{Unknown: !known}
	has := func(rules []firewall.Rule, x firewall.Rule) bool {
		return slices.ContainsFunc(rules, func(r firewall.Rule) bool { return r.String() == x.String() })
	}
	for _, r := range want {
		if !known || !has(inForce, r) {
			p.Add = append(p.Add, r.String())
		}
	}
	for _, r := range inForce {
		if !has(want, r) {
			p.Remove = append(p.Remove, r.String())
		}
	}
	return p
}

func (s *Server) allow(w http.ResponseWriter, r *http.Request) {
	var rule RuleRequest
	if err := decode(r, &rule); err != nil {
		s.fail(w, err)
		return
	}
	s.update(w, r, func(st *config.State) error {
		st.Firewall.Rules = append(st.Firewall.Rules, rule)
		return nil // Validate names a repeat or an overlap
	})
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request) {
	var rule RuleRequest
	if err := decode(r, &rule); err != nil {
		s.fail(w, err)
		return
	}
	probe := config.State{Firewall: config.Firewall{Rules: []config.FirewallRule{rule}}}
	probe.Normalize()
	target, err := probe.FirewallRules()
	if err != nil {
		s.fail(w, inputError{err})
		return
	}
	s.update(w, r, func(st *config.State) error {
		rules, err := st.FirewallRules()
		if err != nil {
			return err
		}
		// The firewall's own rules come first; the apps' ports are the
		// apps' to change.
		var match []int
		for i, x := range rules[:len(st.Firewall.Rules)] {
			if x.Proto == target[0].Proto && x.From == target[0].From && x.To == target[0].To &&
				(len(rule.From) == 0 || sameSources(x.Sources, target[0].Sources)) {
				match = append(match, i)
			}
		}
		switch len(match) {
		case 1:
			st.Firewall.Rules = slices.Delete(st.Firewall.Rules, match[0], match[0]+1)
			return nil
		case 0:
		default:
			var which []string
			for _, i := range match {
				which = append(which, rules[i].String())
			}
			return inputError{fmt.Errorf("%d rules open %s (%s): say which, like moat firewall deny %s, or moat firewall delete NUMBER",
				len(match), target[0], strings.Join(which, "; "), which[0])}
		}
		for _, x := range rules[len(st.Firewall.Rules):] {
			if x.Proto == target[0].Proto && x.From <= target[0].From && target[0].To <= x.To {
				return notFound(fmt.Sprintf("%s is app %s's port: change it in the app's ports (moat export, edit, moat apply -f)", target[0], x.App))
			}
		}
		return notFound(fmt.Sprintf("no rule opens %s: `moat firewall list` shows the rules", target[0]))
	})
}

// sameSources reports whether two lists hold the same prefixes, in any
// order.
func sameSources(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}

// access is what the stored state and the caller say a new ruleset must
// leave open: the caller's SSH connection (from the SSH_CONNECTION it
// sent) and every SSH session open right now to the ports it names (so
// that sudo, which drops SSH_CONNECTION, cannot hide the owner's
// session), the edge's ports.
func (s *Server) access(st config.State, req ApplyRequest) firewall.Access {
	var a firewall.Access
	if caller, port, ok := firewall.SSHCaller(req.SSHConnection); ok {
		a.Caller, a.SSHPort = caller, port
	}
	ports := req.SSHPorts
	if a.SSHPort != 0 && !slices.Contains(ports, a.SSHPort) {
		ports = append(ports, a.SSHPort)
	}
	sessions := s.Sessions
	if sessions == nil {
		sessions = firewall.EstablishedPeers
	}
	for _, p := range ports {
		for _, peer := range sessions(p) {
			a.Sessions = append(a.Sessions, firewall.Session{Peer: peer, Port: p})
		}
	}
	a.HTTPPort = portOf(st.Server.HTTPAddr())
	a.HTTPSPort = portOf(st.Server.HTTPSAddr())
	a.EdgeServes = len(st.Apps) > 0
	if st.Server.ACME.Allows(config.ChallengeHTTP01) {
		a.HTTP01Domains = st.Domains()
	}
	return a
}

func portOf(addr string) uint16 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

func (s *Server) firewallApply(w http.ResponseWriter, r *http.Request) {
	if req, fw, st, ok := s.applyRequest(w, r); ok {
		s.applyRules(w, r, fw, st, req, "firewall.apply", nil)
	}
}

// applyRequest reads an apply-like request and what it needs: the
// daemon's firewall and the stored state. It answers the request itself
// when one is missing.
func (s *Server) applyRequest(w http.ResponseWriter, r *http.Request) (ApplyRequest, Firewall, config.State, bool) {
	var req ApplyRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return req, nil, config.State{}, false
	}
	fw := s.firewall()
	if fw == nil {
		s.fail(w, errUnmanaged)
		return req, nil, config.State{}, false
	}
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return req, nil, config.State{}, false
	}
	return req, fw, st, true
}

// applyRules puts the stored rules in force, after the checks and the
// guards; before, when set, runs once they passed and before anything
// reaches the kernel (on stores that the firewall is on again).
func (s *Server) applyRules(w http.ResponseWriter, r *http.Request, fw Firewall, st config.State, req ApplyRequest, action string, before func() error) {
	ctx := r.Context()
	rules, err := st.FirewallRules()
	if err != nil {
		s.fail(w, err)
		return
	}
	if len(rules) == 0 {
		s.fail(w, inputError{errors.New("there are no rules: putting them in force would drop everything inbound, SSH included. Add rules first, like `moat firewall allow 22/tcp`")})
		return
	}
	if req.Force && req.ConfirmWithin == "" {
		s.fail(w, &config.FieldError{Field: "force", Value: "true", Problem: "skips the check that your SSH sessions survive, so it needs a way back", Fix: "add --confirm-within 60s: the old rules come back by themselves unless you confirm from a new session"})
		return
	}
	var d time.Duration
	if req.ConfirmWithin != "" {
		d, err = time.ParseDuration(req.ConfirmWithin)
		if err != nil || d < 5*time.Second || d > time.Hour {
			s.fail(w, &config.FieldError{Field: "confirm_within", Value: req.ConfirmWithin, Problem: "is not a duration from 5s to 1h", Fix: "write it like 60s or 2m"})
			return
		}
	}
	if err := firewall.Guard(rules, s.access(st, req), req.Force); err != nil {
		s.fail(w, conflict{err})
		return
	}
	if before != nil {
		if err := before(); err != nil {
			s.fail(w, err)
			return
		}
	}
	detail := fmt.Sprintf("%d rules", len(rules))
	if d > 0 {
		previous, wasActive := fw.InForce()
		if active, err := fw.Active(ctx); err == nil && !active {
			wasActive = false
		}
		actor := actor(ctx)
		done := func(err error) {
			e := store.Entry{At: time.Now(), Who: actor.Who, From: actor.From, Action: "firewall.rollback", Target: "firewall", Detail: "no confirmation within " + d.String() + ": the previous rules are back"}
			if err != nil {
				e.Detail = "no confirmation within " + d.String() + ", and putting the previous rules back failed: " + err.Error()
				s.Log.Error("firewall rollback", "err", err)
			}
			if rerr := s.Store.Record(context.Background(), e); rerr != nil {
				s.Log.Error("activity", "err", rerr)
			}
		}
		// A restart before the confirmation puts back what is in force
		// now, not the rules on trial.
		s.saveInForce(ctx, firewall.InForce{Off: !wasActive || len(previous) == 0, Rules: previous})
		if err := fw.ApplyConfirm(ctx, rules, previous, wasActive, d, done); err != nil {
			s.fail(w, err)
			return
		}
		detail += ", rolls back unless confirmed within " + d.String()
		s.reenforceBans(ctx)
	} else if err := s.putInForce(ctx, fw, rules); err != nil {
		s.fail(w, err)
		return
	}
	if req.Force {
		detail += ", SSH check skipped (--force)"
	}
	s.record(ctx, action, "firewall", detail)
	s.firewallStatus(w, r)
}

// putInForce puts rules in force at once and records them, for the daemon
// to put back when it starts.
func (s *Server) putInForce(ctx context.Context, fw Firewall, rules []firewall.Rule) error {
	if err := fw.Apply(ctx, rules); err != nil {
		return err
	}
	s.saveInForce(ctx, firewall.InForce{Rules: rules})
	s.reenforceBans(ctx)
	return nil
}

// reenforceBans gives the guard's bans to a table just made: one that was
// not there (the firewall was off) has none of them.
func (s *Server) reenforceBans(ctx context.Context) {
	if g := s.guard(); g != nil {
		g.Reenforce(context.WithoutCancel(ctx))
	}
}

// saveInForce records what is now in force, for the daemon to put back
// when it starts.
func (s *Server) saveInForce(ctx context.Context, v firewall.InForce) {
	b, err := json.Marshal(v)
	if err == nil {
		err = s.Store.SetInForce(ctx, firewall.StoreName, b)
	}
	if err != nil {
		s.Log.Error("firewall: recording what is in force", "err", err)
	}
}

// record writes an event the caller caused to the activity log.
func (s *Server) record(ctx context.Context, action, target, detail string) {
	a := actor(ctx)
	if err := s.Store.Record(ctx, store.Entry{At: time.Now(), Who: a.Who, From: a.From, Action: action, Target: target, Detail: detail}); err != nil {
		s.Log.Error("activity", "err", err)
	}
}

func (s *Server) firewallConfirm(w http.ResponseWriter, r *http.Request) {
	fw := s.firewall()
	if fw == nil {
		s.fail(w, errUnmanaged)
		return
	}
	if err := fw.Confirm(); err != nil {
		s.fail(w, inputError{err})
		return
	}
	if rules, _ := fw.InForce(); len(rules) > 0 {
		s.saveInForce(r.Context(), firewall.InForce{Rules: rules})
	}
	s.record(r.Context(), "firewall.confirm", "firewall", "the applied rules stay")
	s.firewallStatus(w, r)
}

func (s *Server) firewallOff(w http.ResponseWriter, r *http.Request) {
	fw := s.firewall()
	if fw == nil {
		s.fail(w, errUnmanaged)
		return
	}
	ctx := r.Context()
	if _, err := s.Store.Update(ctx, actor(ctx), false, func(st *config.State) error {
		st.Firewall.Off = true
		return nil
	}); err != nil {
		s.fail(w, err)
		return
	}
	if err := fw.Off(ctx); err != nil {
		s.fail(w, err)
		return
	}
	s.saveInForce(ctx, firewall.InForce{Off: true})
	s.record(ctx, "firewall.off", "firewall", "moat's table removed: the server is open to whatever other tables allow; the rules are kept")
	s.firewallStatus(w, r)
}

func (s *Server) firewallOn(w http.ResponseWriter, r *http.Request) {
	req, fw, st, ok := s.applyRequest(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	s.applyRules(w, r, fw, st, req, "firewall.on", func() error {
		_, err := s.Store.Update(ctx, actor(ctx), false, func(st *config.State) error {
			st.Firewall.Off = false
			return nil
		})
		return err
	})
}

// conflict is a refusal because of what the change would do, not how it
// is written: 409.
type conflict struct{ error }

func (c conflict) Unwrap() error { return c.error }
