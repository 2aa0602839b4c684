package api

import (
	"errors"
	"net/http"
	"os/exec"
	"strings"

	"moat/internal/config"
	"moat/internal/updates"
)

// UpdatesRequest is the body of POST /v1/updates/enable.
type UpdatesRequest struct {
	// RebootWindow is when a reboot an update needs happens (HH:MM,
	// local time); 02:00 when empty. While the server's termination
	// protection is on, updates never reboot it.
	RebootWindow string `json:"reboot_window,omitempty"`
	// Install installs unattended-upgrades first, when it is missing.
	Install bool `json:"install,omitempty"`
}

// UpdatesChange is what enable or disable did, and the status after.
type UpdatesChange struct {
	Files  []string       `json:"files"`
	Status updates.Status `json:"status"`
}

func (s *Server) updatesRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/updates", s.updatesStatus)
	mux.HandleFunc("POST /v1/updates/enable", s.updatesEnable)
	mux.HandleFunc("POST /v1/updates/disable", s.updatesDisable)
}

func (s *Server) updatesStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Updates.Read(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) updatesEnable(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req UpdatesRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	if req.Install && !s.Updates.Installed() {
		if s.Updates.Root != "" && s.Updates.Root != "/" {
			s.fail(w, inputError{errUnderRoot})
			return
		}
		out, err := exec.CommandContext(ctx, "apt-get", "install", "-y", "unattended-upgrades").CombinedOutput()
		if err != nil {
			s.fail(w, &config.FieldError{Field: "install", Value: "true", Problem: "apt-get install unattended-upgrades failed: " + lastLine(string(out)), Fix: "run apt-get update, then try again"})
			return
		}
		s.record(ctx, "updates.install", "unattended-upgrades", lastLine(string(out)))
	}
	files, err := s.Updates.Enable(ctx, updates.Options{RebootWindow: req.RebootWindow, NoReboot: st.Server.Protect})
	if err != nil {
		if strings.Contains(err.Error(), "HH:MM") {
			err = &config.FieldError{Field: "reboot_window", Value: req.RebootWindow, Problem: "is not a time", Fix: "write it as HH:MM, like 02:00"}
		}
		s.fail(w, inputError{err})
		return
	}
	detail := "security updates daily, reboots at " + or(req.RebootWindow, "02:00") + " when one is needed"
	if st.Server.Protect {
		detail = "security updates daily; no reboots while the server is protected against termination"
	}
	s.record(ctx, "updates.enable", "updates", detail+"; wrote "+strings.Join(files, ", "))
	s.answerUpdates(w, r, files)
}

var errUnderRoot = errors.New("moat installs unattended-upgrades only on the machine itself, not under another root")

func (s *Server) updatesDisable(w http.ResponseWriter, r *http.Request) {
	files, err := s.Updates.Disable()
	if err != nil {
		s.fail(w, err)
		return
	}
	s.record(r.Context(), "updates.disable", "updates", "removed "+strings.Join(files, ", "))
	s.answerUpdates(w, r, files)
}

func (s *Server) answerUpdates(w http.ResponseWriter, r *http.Request, files []string) {
	st, err := s.Updates.Read(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if files == nil {
		files = []string{}
	}
	writeJSON(w, http.StatusOK, UpdatesChange{Files: files, Status: st})
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
