package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/store"
)

// SSH is the running daemon's hold on sshd; *sshd.Manager is one.
type SSH interface {
	Harden(ctx context.Context, o sshd.HardenOptions, done func(error)) (sshd.Access, []int, error)
	HardenDropIn() ([]byte, error)
	Confirm(ctx context.Context) error
	Pending() (bool, []byte)
	Audit(ctx context.Context) ([]sshd.Finding, error)
	CheckAccess(ctx context.Context, proposed []sshd.UserKeys) (sshd.Access, error)
	Effective(ctx context.Context, user string) (sshd.Effective, error)
}

// SSHTrial is what the store keeps while a hardening waits for its
// confirmation: a restart before it puts Previous back (nil: no drop-in).
type SSHTrial struct {
	// ID tells one trial from the next, so that the rollback of an old
	// one never clears a newer one's record.
	ID       int64   `json:"id,omitempty"`
	Pending  bool    `json:"pending"`
	Previous *string `json:"previous,omitempty"`
	// OldPorts are the ports sshd moves from: the firewall closes them
	// when the move is confirmed.
	OldPorts []int `json:"old_ports,omitempty"`
	// From is the SSH connection (client address and port) the
	// hardening came from, and Open those open to sshd then: the
	// confirmation must come from none of them, but from a session that
	// logged in under the new settings.
	From string   `json:"from,omitempty"`
	Open []string `json:"open,omitempty"`
	// NewPort is where sshd moves (0: it stays); Opened says that moat
	// opened it in the firewall for the move, to close again on a
	// rollback.
	NewPort int  `json:"new_port,omitempty"`
	Opened  bool `json:"opened,omitempty"`
}

// ConfirmRequest is the body of POST /v1/ssh/confirm.
type ConfirmRequest struct {
	// SSHConnection is the caller's SSH_CONNECTION.
	SSHConnection string `json:"ssh_connection,omitempty"`
	// Console confirms without an SSH session (at the server's console,
	// which sshd's settings do not lock out).
	Console bool `json:"console,omitempty"`
}

// sshSession is "address port" of the client of an SSH_CONNECTION, or "".
func sshSession(conn string) string {
	f := strings.Fields(conn)
	if len(f) < 2 {
		return ""
	}
	return f[0] + " " + f[1]
}

// SSHStoreName is the in-force name of SSHTrial.
const SSHStoreName = "sshd"

// HardenRequest is the body of POST /v1/ssh/harden.
type HardenRequest struct {
	// ConfirmWithin, like "120s" (the default), is how long the new
	// settings wait for POST /v1/ssh/confirm before the previous ones
	// come back.
	ConfirmWithin string `json:"confirm_within,omitempty"`
	// Port, when set, moves sshd there. The firewall opens it first;
	// sshd listens on the old port too until the confirmation, which
	// closes the old port in sshd and in the firewall.
	Port int `json:"port,omitempty"`
	// SSHConnection is the caller's SSH_CONNECTION, so that the
	// confirmation is refused from this same session.
	SSHConnection string `json:"ssh_connection,omitempty"`
}

// HardenResponse says who keeps a way in, and until when the change
// waits for its confirmation.
type HardenResponse struct {
	sshd.Access
	ConfirmBy time.Time `json:"confirm_by"`
}

// AuditResponse is sshd's effective settings against the recommended.
type AuditResponse struct {
	Findings []sshd.Finding `json:"findings"`
	Pending  bool           `json:"pending,omitempty"`
}

func (s *Server) sshHardenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/ssh/harden", s.sshHarden)
	mux.HandleFunc("POST /v1/ssh/confirm", s.sshConfirm)
	mux.HandleFunc("GET /v1/ssh/audit", s.sshAudit)
}

var errNoSSH = inputError{errors.New("no running moat daemon manages sshd here: start moat serve (without --ssh=false)")}

func (s *Server) ssh() SSH {
	if s.Runtime == nil {
		return nil
	}
	return s.Runtime.SSH()
}

func (s *Server) saveTrial(ctx context.Context, t SSHTrial) error {
	b, _ := json.Marshal(t)
	return s.Store.SetInForce(ctx, SSHStoreName, b)
}

func (s *Server) recordSSH(ctx context.Context, who store.Actor, action, detail string) {
	if err := s.Store.Record(ctx, store.Entry{At: time.Now(), Who: who.Who, From: who.From, Action: action, Target: "sshd", Detail: detail}); err != nil {
		s.Log.Error("activity", "err", err)
	}
}

func (s *Server) sshHarden(w http.ResponseWriter, r *http.Request) {
	var req HardenRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	window := 120 * time.Second
	if req.ConfirmWithin != "" {
		d, err := time.ParseDuration(req.ConfirmWithin)
		if err != nil || d < 10*time.Second || d > time.Hour {
			s.fail(w, &config.FieldError{Field: "confirm_within", Value: req.ConfirmWithin, Problem: "is not a duration from 10s to 1h", Fix: "write it like 120s: time enough to log in from a new session with your key and confirm"})
			return
		}
		window = d
	}
	if req.Port < 0 || req.Port > 65535 {
		s.fail(w, &config.FieldError{Field: "port", Value: fmt.Sprint(req.Port), Problem: "is not a port from 1 to 65535", Fix: "give the port sshd moves to, like 2222, or leave it out"})
		return
	}
	m := s.ssh()
	if m == nil {
		s.fail(w, errNoSSH)
		return
	}
	// One hardening or confirmation at a time, so that the stored record
	// and the trial in sshd are the same one.
	s.sshMu.Lock()
	defer s.sshMu.Unlock()
	ctx := context.WithoutCancel(r.Context())
	who := actor(ctx)
	before, err := s.Store.InForce(ctx, SSHStoreName)
	if err != nil {
		s.fail(w, err)
		return
	}
	// The sessions open now logged in under the old settings: none of
	// them may confirm.
	t := SSHTrial{ID: time.Now().UnixNano(), Pending: true, From: sshSession(req.SSHConnection), NewPort: req.Port}
	if eff, err := m.Effective(ctx, "root"); err == nil {
		for _, p := range eff.Values("port") {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil {
				for _, c := range s.conns(uint16(n)) {
					t.Open = append(t.Open, c.Addr().String()+" "+strconv.Itoa(int(c.Port())))
				}
			}
		}
	}
	if req.Port != 0 {
		// The new port opens first: sshd must be reachable there before
		// it listens there alone.
		opened, err := s.openSSHPort(ctx, req.Port)
		if err != nil {
			s.fail(w, err)
			return
		}
		t.Opened = opened
	}
	// What to go back to is kept before anything changes, so that a
	// restart in the window goes back too.
	previous, err := m.HardenDropIn()
	if pending, prev := m.Pending(); pending {
		previous = prev // a hardening on trial goes back to what it replaced
	}
	if previous != nil {
		p := string(previous)
		t.Previous = &p
	}
	if err == nil {
		err = s.saveTrial(ctx, t)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	a, old, err := m.Harden(ctx, sshd.HardenOptions{Window: window, Port: req.Port}, func(err error) {
		s.rolledBack(t, window, who, err)
	})
	if err != nil {
		if pending, _ := m.Pending(); pending {
			s.Store.SetInForce(ctx, SSHStoreName, before) // the trial before this one stays
		} else {
			s.saveTrial(ctx, SSHTrial{})
		}
		if t.Opened {
			s.closeSSHPorts(ctx, []int{req.Port})
		}
		if errors.Is(err, sshd.ErrLockout) || errors.Is(err, sshd.ErrNotTaken) {
			err = conflict{err}
		}
		s.fail(w, err)
		return
	}
	for _, p := range old {
		if req.Port != 0 && p != req.Port {
			t.OldPorts = append(t.OldPorts, p)
		}
	}
	if err := s.saveTrial(ctx, t); err != nil {
		s.Log.Error("sshd: keeping the trial", "err", err)
	}
	by := time.Now().Add(window).UTC()
	detail := fmt.Sprintf("password login off, root by key only; users with a key: %v; rolls back unless confirmed within %s", a.WithKeys, window)
	if req.Port != 0 {
		detail += fmt.Sprintf("; sshd moves to port %d (from %v once confirmed)", req.Port, old)
	}
	s.recordSSH(ctx, who, "ssh.harden", detail)
	writeJSON(w, http.StatusOK, HardenResponse{Access: a, ConfirmBy: by})
}

// rolledBack records the rollback of trial t. Its record is cleared only
// when the rollback worked (a failed one is tried again, in moat and at
// the next start), and only if it is still t's; the port t opened closes.
// It runs under sshd's lock: it must not wait for s.sshMu.
func (s *Server) rolledBack(t SSHTrial, window time.Duration, who store.Actor, err error) {
	ctx := context.Background()
	detail := "no confirmation within " + window.String() + ": the previous sshd settings are back"
	if err != nil {
		detail = "no confirmation within " + window.String() + ", and putting the previous sshd settings back failed (tried again in a minute): " + err.Error()
		s.Log.Error("sshd rollback", "err", err)
	} else {
		var cur SSHTrial
		if raw, rerr := s.Store.InForce(ctx, SSHStoreName); rerr == nil && (raw == nil || json.Unmarshal(raw, &cur) != nil || cur.ID == t.ID) {
			if err := s.saveTrial(ctx, SSHTrial{}); err != nil {
				s.Log.Error("sshd rollback", "err", err)
			}
		}
		if t.Opened {
			if err := s.closeSSHPorts(ctx, []int{t.NewPort}); err != nil {
				detail += fmt.Sprintf("; closing port %d again in the firewall failed: %v", t.NewPort, err)
			} else {
				detail += fmt.Sprintf("; port %d is closed again", t.NewPort)
			}
		}
	}
	s.recordSSH(ctx, who, "ssh.rollback", detail)
}

func (s *Server) sshConfirm(w http.ResponseWriter, r *http.Request) {
	m := s.ssh()
	if m == nil {
		s.fail(w, errNoSSH)
		return
	}
	var req ConfirmRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			s.fail(w, err)
			return
		}
	}
	s.sshMu.Lock()
	defer s.sshMu.Unlock()
	ctx := context.WithoutCancel(r.Context())
	var trial SSHTrial
	if raw, err := s.Store.InForce(ctx, SSHStoreName); err == nil && raw != nil {
		json.Unmarshal(raw, &trial)
	}
	session := sshSession(req.SSHConnection)
	if why := confirmRefusal(trial, session, serverPort(req.SSHConnection), req.Console); why != "" {
		s.fail(w, conflict{errors.New(why)})
		return
	}
	if err := m.Confirm(ctx); err != nil {
		if pending, _ := m.Pending(); !pending && trial.Pending {
			s.saveTrial(ctx, SSHTrial{}) // the hardening stays, whatever else failed
		}
		s.fail(w, conflict{err})
		return
	}
	if err := s.saveTrial(ctx, SSHTrial{}); err != nil {
		s.fail(w, err)
		return
	}
	detail := "the hardened sshd settings stay"
	if len(trial.OldPorts) > 0 {
		if err := s.closeSSHPorts(ctx, trial.OldPorts); err != nil {
			detail += fmt.Sprintf("; closing the old ports %v in the firewall failed: %v", trial.OldPorts, err)
		} else {
			detail += fmt.Sprintf("; the old ports %v are closed", trial.OldPorts)
		}
	}
	s.recordSSH(ctx, actor(ctx), "ssh.confirm", detail)
	s.sshAudit(w, r)
}

// confirmRefusal says why a confirmation from session (client "addr
// port", on server port) proves nothing, or "": it must come from a
// session that logged in under the new settings, on the new port after a
// move. From a console (no SSH session) it is taken only when asked.
func confirmRefusal(t SSHTrial, session string, port int, console bool) string {
	const fix = "open a NEW SSH session with your key and run moat ssh confirm there: that it gets in is the proof you keep a way in"
	switch {
	case session == "" && t.NewPort != 0:
		return fmt.Sprintf("a move to port %d is confirmed from an SSH session on port %d: %s", t.NewPort, t.NewPort, fix)
	case session == "" && !console:
		return "this is no SSH session (SSH_CONNECTION is not set): " + fix + "; from a console, moat ssh confirm --console"
	case session != "" && (session == t.From || slices.Contains(t.Open, session)):
		return "this session was open before the hardening, and logged in under the old settings: " + fix
	case t.NewPort != 0 && port != t.NewPort:
		return fmt.Sprintf("this session came in on port %d, not on the new port %d: %s", port, t.NewPort, fix)
	}
	return ""
}

// serverPort is the server port of an SSH_CONNECTION, 0 when unknown.
func serverPort(conn string) int {
	f := strings.Fields(conn)
	if len(f) < 4 {
		return 0
	}
	n, _ := strconv.Atoi(f[3])
	return n
}

// conns lists the remote ends of the connections open to a local port.
func (s *Server) conns(port uint16) []netip.AddrPort {
	if s.Conns != nil {
		return s.Conns(port)
	}
	return firewall.EstablishedConns(port)
}

func (s *Server) sshAudit(w http.ResponseWriter, r *http.Request) {
	m := s.ssh()
	if m == nil {
		s.fail(w, errNoSSH)
		return
	}
	f, err := m.Audit(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	pending, _ := m.Pending()
	if f == nil {
		f = []sshd.Finding{}
	}
	writeJSON(w, http.StatusOK, AuditResponse{Findings: f, Pending: pending})
}

// openSSHPort opens port in the firewall's rules and, when moat's table is
// in force, in the kernel, unless a rule opens it to anyone already.
func (s *Server) openSSHPort(ctx context.Context, port int) (bool, error) {
	spec := fmt.Sprintf("%d/tcp", port)
	opened := false
	_, err := s.change(ctx, false, func(st *config.State) error {
		rules, err := st.FirewallRules()
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Proto == "tcp" && int(r.From) <= port && port <= int(r.To) && len(r.Sources) == 0 {
				return nil
			}
		}
		st.Firewall.Rules = append(st.Firewall.Rules, config.FirewallRule{Port: spec, Comment: "ssh"})
		opened = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("opening port %s for sshd in the firewall first: %w", spec, err)
	}
	return opened, s.applyStoredRules(ctx)
}

// closeSSHPorts removes the firewall's rules for exactly these ports (an
// old sshd port), and applies the rest.
func (s *Server) closeSSHPorts(ctx context.Context, ports []int) error {
	_, err := s.change(ctx, false, func(st *config.State) error {
		var keep []config.FirewallRule
		for _, r := range st.Firewall.Rules {
			drop := false
			for _, p := range ports {
				if r.Port == fmt.Sprintf("%d/tcp", p) {
					drop = true
				}
			}
			if !drop {
				keep = append(keep, r)
			}
		}
		st.Firewall.Rules = keep
		return nil
	})
	if err != nil {
		return err
	}
	return s.applyStoredRules(ctx)
}

// applyStoredRules puts the stored rules in force, when moat's table is in
// force now (a firewall that is off stays off).
func (s *Server) applyStoredRules(ctx context.Context) error {
	fw := s.firewall()
	if fw == nil {
		return nil
	}
	if active, err := fw.Active(ctx); err != nil || !active {
		return err
	}
	st, _, err := s.Store.State(ctx)
	if err != nil {
		return err
	}
	rules, err := st.FirewallRules()
	if err != nil {
		return err
	}
	return s.putInForce(ctx, fw, rules)
}
