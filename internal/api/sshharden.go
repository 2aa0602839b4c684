package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"moat/internal/config"
	"moat/internal/sshd"
	"moat/internal/store"
)

// SSH is the running daemon's hold on sshd; *sshd.Manager is one.
type SSH interface {
	Harden(ctx context.Context, window time.Duration, done func(error)) (sshd.Access, error)
	HardenDropIn() ([]byte, error)
	Confirm() error
	Pending() (bool, []byte)
	Audit(ctx context.Context) ([]sshd.Finding, error)
}

// SSHTrial is what the store keeps while a hardening waits for its
// confirmation: a restart before it puts Previous back (nil: no drop-in).
type SSHTrial struct {
	Pending  bool    `json:"pending"`
	Previous *string `json:"previous,omitempty"`
}

// SSHStoreName is the in-force name of SSHTrial.
const SSHStoreName = "sshd"

// HardenRequest is the body of POST /v1/ssh/harden.
type HardenRequest struct {
	// ConfirmWithin, like "120s" (the default), is how long the new
	// settings wait for POST /v1/ssh/confirm before the previous ones
	// come back.
	ConfirmWithin string `json:"confirm_within,omitempty"`
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
	m := s.ssh()
	if m == nil {
		s.fail(w, errNoSSH)
		return
	}
	ctx := r.Context()
	who := actor(ctx)
	// What to go back to is kept before anything changes, so that a
	// restart in the window goes back too.
	previous, err := m.HardenDropIn()
	if err == nil {
		t := SSHTrial{Pending: true}
		if previous != nil {
			p := string(previous)
			t.Previous = &p
		}
		if pending, prev := m.Pending(); pending {
			t.Previous = nil // a hardening on trial goes back to what it replaced
			if prev != nil {
				p := string(prev)
				t.Previous = &p
			}
		}
		err = s.saveTrial(ctx, t)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	a, err := m.Harden(ctx, window, func(err error) {
		detail := "no confirmation within " + window.String() + ": the previous sshd settings are back"
		if err != nil {
			detail = "no confirmation within " + window.String() + ", and putting the previous sshd settings back failed: " + err.Error()
			s.Log.Error("sshd rollback", "err", err)
		}
		bg := context.Background()
		if err := s.saveTrial(bg, SSHTrial{}); err != nil {
			s.Log.Error("sshd rollback", "err", err)
		}
		s.recordSSH(bg, who, "ssh.rollback", detail)
	})
	if err != nil {
		if pending, _ := m.Pending(); !pending {
			s.saveTrial(context.WithoutCancel(ctx), SSHTrial{})
		}
		s.fail(w, conflict{err})
		return
	}
	by := time.Now().Add(window).UTC()
	s.recordSSH(ctx, who, "ssh.harden", fmt.Sprintf("password login off, root by key only; users with a key: %v; rolls back unless confirmed within %s", a.WithKeys, window))
	writeJSON(w, http.StatusOK, HardenResponse{Access: a, ConfirmBy: by})
}

func (s *Server) sshConfirm(w http.ResponseWriter, r *http.Request) {
	m := s.ssh()
	if m == nil {
		s.fail(w, errNoSSH)
		return
	}
	ctx := r.Context()
	if err := m.Confirm(); err != nil {
		s.fail(w, conflict{err})
		return
	}
	if err := s.saveTrial(ctx, SSHTrial{}); err != nil {
		s.fail(w, err)
		return
	}
	s.recordSSH(ctx, actor(ctx), "ssh.confirm", "the hardened sshd settings stay")
	s.sshAudit(w, r)
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
