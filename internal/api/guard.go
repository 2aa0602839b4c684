package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/guard"
)

// Guard is the running daemon's brute-force guard; *guard.Warden is one.
type Guard interface {
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, by, reason string, spare []netip.Addr) (guard.Ban, error)
	Unban(ctx context.Context, p netip.Prefix, by string) (guard.Ban, error)
	List() []guard.Ban
	Stats() guard.Stats
	// Reenforce puts every ban in force in the kernel again, after the
	// firewall's table was (re)made.
	Reenforce(ctx context.Context)
}

// GuardStatus is the guard as GET /v1/guard reports it.
type GuardStatus struct {
	// Running is false when no daemon runs: the settings are stored,
	// nothing is read or banned.
	Running bool          `json:"running"`
	Off     bool          `json:"off,omitempty"`
	Ignore  []string      `json:"ignore"`
	Jails   []config.Jail `json:"jails"`
	Bans    []guard.Ban   `json:"bans"`
	Stats   *guard.Stats  `json:"stats,omitempty"`
}

// BanRequest is the body of POST /v1/guard/bans.
type BanRequest struct {
	// Address is an address or a CIDR prefix.
	Address string `json:"address"`
	// For is how long, like "1h"; "0" bans until lifted; 24h when empty.
	For    string `json:"for,omitempty"`
	Reason string `json:"reason,omitempty"`
	// SSHConnection is the caller's SSH_CONNECTION: a ban that would
	// cut the caller off is refused.
	SSHConnection string `json:"ssh_connection,omitempty"`
}

// IgnoreRequest is the body of POST and DELETE /v1/guard/ignore.
type IgnoreRequest struct {
	// Address is an address or a CIDR prefix; empty with Me.
	Address string `json:"address,omitempty"`
	// Me ignore-lists the caller's own address, from SSHConnection (moat
	// guard ignore-me).
	Me            bool   `json:"me,omitempty"`
	SSHConnection string `json:"ssh_connection,omitempty"`
}

// DefaultManualBan is how long moat guard ban bans when not told.
const DefaultManualBan = 24 * time.Hour

func (s *Server) guardRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/guard", s.guardStatus)
	mux.HandleFunc("POST /v1/guard/bans", s.guardBan)
	mux.HandleFunc("DELETE /v1/guard/bans", s.guardUnban)
	mux.HandleFunc("POST /v1/guard/ignore", s.guardIgnore)
	mux.HandleFunc("DELETE /v1/guard/ignore", s.guardUnignore)
}

func (s *Server) guard() Guard {
	if s.Runtime == nil {
		return nil
	}
	return s.Runtime.Guard()
}

var errNoGuard = inputError{errors.New("no running moat daemon: bans are made and lifted by `moat serve`; start it first")}

func (s *Server) guardStatus(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := GuardStatus{Off: st.Guard.Off, Ignore: st.Guard.Ignore, Jails: st.GuardJails(), Bans: []guard.Ban{}}
	if out.Ignore == nil {
		out.Ignore = []string{}
	}
	if g := s.guard(); g != nil {
		out.Running = true
		out.Bans = g.List()
		stats := g.Stats()
		out.Stats = &stats
	}
	writeJSON(w, http.StatusOK, out)
}

// parsePrefix reads an address or a CIDR prefix from a request field.
func parsePrefix(field, v string) (netip.Prefix, error) {
	p, err := firewall.ParseSource(v)
	if err != nil {
		return netip.Prefix{}, inputError{&config.FieldError{Field: field, Value: v, Problem: "is not an address or CIDR prefix", Fix: "write an address like 203.0.113.7 or a prefix like 203.0.113.0/24"}}
	}
	return p, nil
}

func (s *Server) guardBan(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	p, err := parsePrefix("address", req.Address)
	if err != nil {
		s.fail(w, err)
		return
	}
	d := DefaultManualBan
	if req.For != "" {
		if d, err = time.ParseDuration(req.For); err != nil || d < 0 || (d > 0 && d < time.Second) {
			s.fail(w, inputError{&config.FieldError{Field: "for", Value: req.For, Problem: "is not a duration of 1s or more", Fix: "write how long, like 1h or 7d as 168h, or 0 for until lifted"}})
			return
		}
	}
	g := s.guard()
	if g == nil {
		s.fail(w, errNoGuard)
		return
	}
	var spare []netip.Addr
	if caller, _, ok := firewall.SSHCaller(req.SSHConnection); ok {
		spare = append(spare, caller)
	}
	b, err := g.Ban(r.Context(), p, d, actor(r.Context()).Who, req.Reason, spare)
	switch {
	case errors.Is(err, guard.ErrRefused):
		err = inputError{err}
	case errors.Is(err, guard.ErrAlreadyBanned):
		err = conflict{err}
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, b)
}

func (s *Server) guardUnban(w http.ResponseWriter, r *http.Request) {
	p, err := parsePrefix("address", r.URL.Query().Get("address"))
	if err != nil {
		s.fail(w, err)
		return
	}
	g := s.guard()
	if g == nil {
		s.fail(w, errNoGuard)
		return
	}
	b, err := g.Unban(r.Context(), p, actor(r.Context()).Who)
	switch {
	case errors.Is(err, guard.ErrNotBanned):
		err = notFound(err.Error())
	case errors.Is(err, guard.ErrRefused):
		err = inputError{err}
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// ignoreTarget is the prefix an ignore request names. The caller's own
// IPv6 address is ignored with its prefix of v6Prefix bits: the guard
// counts and bans IPv6 per prefix, and devices change their temporary
// addresses within it.
func ignoreTarget(req IgnoreRequest, v6Prefix int) (netip.Prefix, error) {
	if !req.Me {
		return parsePrefix("address", req.Address)
	}
	caller, _, ok := firewall.SSHCaller(req.SSHConnection)
	if !ok {
		return netip.Prefix{}, inputError{errors.New("your address is not known: ignore-me reads it from SSH_CONNECTION, which is set in an SSH session (sudo -E keeps it); name the address instead: moat guard ignore ADDRESS")}
	}
	if caller.Is4() {
		return netip.PrefixFrom(caller, 32), nil
	}
	if v6Prefix <= 0 {
		v6Prefix = guard.DefaultPolicy().V6Prefix
	}
	return caller.Prefix(v6Prefix)
}

func (s *Server) guardIgnore(w http.ResponseWriter, r *http.Request) {
	var req IgnoreRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	p, err := ignoreTarget(req, st.Server.RateLimit.IPv6Prefix)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.update(w, r, func(st *config.State) error {
		for _, have := range st.GuardIgnore() {
			if have.Contains(p.Addr()) && have.Bits() <= p.Bits() {
				return conflict{fmt.Errorf("%s is ignore-listed already, by %s", p, have)}
			}
		}
		// A ban of it in force now is lifted when the daemon applies
		// the new list.
		st.Guard.Ignore = append(st.Guard.Ignore, p.String())
		return nil
	})
}

func (s *Server) guardUnignore(w http.ResponseWriter, r *http.Request) {
	p, err := parsePrefix("address", r.URL.Query().Get("address"))
	if err != nil {
		s.fail(w, err)
		return
	}
	s.update(w, r, func(st *config.State) error {
		i := slices.Index(st.Guard.Ignore, p.String())
		if i < 0 {
			for _, have := range st.GuardIgnore() {
				if have.Overlaps(p) {
					return notFound(fmt.Sprintf("%s is not on the ignore list by itself: %s is; take that off: moat guard unignore %s", p, have, have))
				}
			}
			return notFound(fmt.Sprintf("%s is not on the ignore list (moat guard list shows it)", p))
		}
		st.Guard.Ignore = slices.Delete(st.Guard.Ignore, i, i+1)
		return nil
	})
}
