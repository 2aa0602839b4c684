package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"moat/internal/audit"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/store"
)

func (s *Server) auditRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit", s.getAudit)
	mux.HandleFunc("GET /v1/audit/history", s.auditHistory)
	mux.HandleFunc("POST /v1/audit/fix/{check}", s.auditFix)
}

func (s *Server) getAudit(w http.ResponseWriter, r *http.Request) {
	rep, err := s.Audit(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// AuditScore is one audit of the history: when, and its score.
type AuditScore struct {
	At       string `json:"at"`
	Score    int    `json:"score"`
	Findings int    `json:"findings"`
}

func (s *Server) auditHistory(w http.ResponseWriter, r *http.Request) {
	list, err := s.Store.Audits(r.Context(), 100)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []AuditScore{}
	for _, a := range list {
		var rep audit.Report
		json.Unmarshal(a.Report, &rep)
		out = append(out, AuditScore{At: a.At.UTC().Format("2006-01-02T15:04:05Z"), Score: a.Score, Findings: len(rep.Findings)})
	}
	writeJSON(w, http.StatusOK, out)
}

// Audit reads the host back and judges it, keeps the report in the
// history, and alerts (email and webhook) what got worse since the last
// one: a new open listener, the firewall off, sshd loosened.
func (s *Server) Audit(ctx context.Context) (audit.Report, error) {
	h, err := s.observe(ctx)
	if err != nil {
		return audit.Report{}, err
	}
	rep := audit.Run(h, s.now().UTC())
	prev, err := s.Store.Audits(ctx, 1)
	if err != nil {
		return rep, err
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		return rep, fmt.Errorf("audit: %w", err)
	}
	if err := s.Store.AddAudit(ctx, store.Audit{At: rep.At, Score: rep.Score, Report: raw}); err != nil {
		return rep, err
	}
	if len(prev) == 1 {
		var before audit.Report
		if json.Unmarshal(prev[0].Report, &before) == nil {
			if worse := audit.Regressions(before, rep); len(worse) > 0 {
				var b strings.Builder
				fmt.Fprintf(&b, "The audit's score went from %d to %d. New since %s:\n", before.Score, rep.Score, before.At.Format("2 Jan 15:04 UTC"))
				for _, f := range worse {
					fmt.Fprintf(&b, "\n[%s] %s\n  Fix: %s\n", f.Severity, f.Finding, f.Fix)
				}
				s.record(ctx, "audit.regression", "audit", b.String())
				s.alert(ctx, "audit.regression", "audit", b.String())
			}
		}
	}
	return rep, nil
}

// observe reads what the audit judges; a part that cannot be read is a
// problem in the report, not a failure.
func (s *Server) observe(ctx context.Context) (audit.Host, error) {
	st, _, err := s.Store.State(ctx)
	if err != nil {
		return audit.Host{}, err
	}
	var h audit.Host
	if h.Listeners, err = s.Proc.Sockets(); err != nil {
		h.Problems = append(h.Problems, "the listening sockets: "+err.Error())
	}
	h.Own = map[string]string{}
	for what, addr := range map[string]string{"moat's edge (HTTP)": st.Server.HTTPAddr(), "moat's edge (HTTPS)": st.Server.HTTPSAddr(), "moat's admin listener": st.Server.AdminAddr()} {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			h.Own[port+"/tcp"] = what
		}
	}
	sshPorts := []string{"22"}
	if sh := s.ssh(); sh != nil {
		found, err := sh.Audit(ctx)
		if err != nil {
			h.Problems = append(h.Problems, "sshd's settings: "+err.Error())
		} else {
			h.SSH = &found
		}
		if eff, err := sh.Effective(ctx, "root"); err == nil {
			h.SSHD = eff
			if len(eff.Values("port")) > 0 {
				sshPorts = eff.Values("port")
			}
		}
	}
	for _, p := range sshPorts {
		h.Own[p+"/tcp"] = "sshd"
	}
	if s.Runtime != nil {
		h.Certificates = s.Runtime.Certificates()
		if h.Certificates == nil {
			h.Certificates = []certs.Status{}
		}
		g := &audit.Guard{Off: st.Guard.Off}
		for _, j := range st.Guard.Jails {
			if j.Off && (j.Name == config.JailSSHD || j.Name == config.JailMoat || j.Name == config.JailMail) {
				g.JailsOff = append(g.JailsOff, j.Name)
			}
		}
		h.Guard = g
	}
	if h.Docker, err = audit.Containers(ctx, s.DockerSocket); err != nil {
		h.Problems = append(h.Problems, "Docker: "+err.Error())
	}
	if u, err := s.Updates.Read(ctx); err != nil {
		h.Problems = append(h.Problems, "the updates: "+err.Error())
	} else {
		h.Updates = &u
	}
	if fw := s.firewall(); fw != nil {
		f := &audit.Firewall{Off: st.Firewall.Off}
		if f.Active, err = fw.Active(ctx); err != nil {
			h.Problems = append(h.Problems, "the firewall: "+err.Error())
		}
		_, f.Pending = fw.Pending()
		if rules, known := fw.InForce(); known {
			f.Rules = rules
		} else if f.Rules, err = st.FirewallRules(); err != nil {
			h.Problems = append(h.Problems, "the firewall's rules: "+err.Error())
		}
		var bans []netip.Prefix
		if s.Runtime != nil && s.Runtime.Guard() != nil {
			for _, b := range s.Runtime.Guard().List() {
				bans = append(bans, b.Prefix)
			}
		}
		if f.Drift, _, err = fw.Drift(ctx, bans); err != nil {
			h.Problems = append(h.Problems, "the firewall's drift: "+err.Error())
		}
		h.Firewall = f
	}
	return h, nil
}

// auditFix does what a finding's fix says where moat can do it itself:
// the firewall's, through the same checks as moat firewall apply (the
// caller's SSH session must survive, or --confirm-within rolls back).
func (s *Server) auditFix(w http.ResponseWriter, r *http.Request) {
	check := r.PathValue("check")
	switch check {
	case "firewall.drift", "firewall.off":
		req, fw, st, ok := s.applyRequest(w, r)
		if !ok {
			return
		}
		if st.Firewall.Off {
			s.fail(w, conflict{fmt.Errorf("the firewall is off by your choice: moat firewall on puts it back")})
			return
		}
		s.applyRules(w, r, fw, st, req, "audit.fix", nil)
	default:
		s.fail(w, &config.FieldError{Field: "check", Value: check, Problem: "is not a finding moat fixes itself",
			Fix: "run the command its fix names (moat audit shows it); moat fixes " + strconv.Quote("firewall.drift") + " and " + strconv.Quote("firewall.off")})
	}
}
