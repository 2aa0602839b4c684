package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"

	"moat/internal/apps"
	"moat/internal/config"
)

// Lifecycle runs an app's lifecycle commands; apps.Runner is one.
type Lifecycle interface {
	Run(ctx context.Context, a config.App, action string) (apps.Result, error)
}

// HostRequest is the body of POST /v1/host/reboot and /v1/host/poweroff.
type HostRequest struct {
	// Confirm is the word reboot or poweroff, typed back.
	Confirm string `json:"confirm"`
}

func (s *Server) lifecycleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/apps/{name}/{action}", s.runApp)
	mux.HandleFunc("POST /v1/host/{action}", s.hostPower)
}

func (s *Server) lifecycle() Lifecycle {
	if s.Lifecycle != nil {
		return s.Lifecycle
	}
	return apps.Runner{}
}

// protectedApp refuses a terminating action on an app under termination
// protection.
func protectedApp(a config.App, action string) error {
	if !a.Protect || !config.Terminating(action) {
		return nil
	}
	return conflict{fmt.Errorf("app %s is protected against termination, so moat does not %s it: turn the protection off first (moat app set %s --protect=false), then %s it", a.Name, action, a.Name, action)}
}

func (s *Server) runApp(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	if action == "restore" {
		s.restoreApp(w, r, name)
		return
	}
	if !slices.Contains(config.Actions, action) || action == "remove" {
		s.fail(w, notFound(fmt.Sprintf("POST /v1/apps/%s/%s: no such action; the actions are start, stop, restart, upgrade, status and restore (removal is DELETE /v1/apps/%s)", name, action, name)))
		return
	}
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	a, ok := st.App(name)
	if !ok {
		s.fail(w, noApp(name))
		return
	}
	if err := protectedApp(*a, action); err != nil {
		s.record(r.Context(), "app."+action+"_refused", name, err.Error())
		s.fail(w, err)
		return
	}
	res, err := s.lifecycle().Run(r.Context(), *a, action)
	if errors.Is(err, apps.ErrNoCommand) {
		s.fail(w, &config.FieldError{Field: "run." + action, Value: "", Problem: "is not set for app " + name,
			Fix: "give the app a command for it in moat.yaml (run: {" + action + ": ...}), or its systemd unit (run: {systemd: " + name + ".service})"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if action != "status" {
		s.record(r.Context(), "app."+action, name, runDetail(res))
	}
	writeJSON(w, http.StatusOK, res)
}

// runDetail is a command's outcome for the activity log: how it ended
// and the end of its output.
func runDetail(res apps.Result) string {
	how := fmt.Sprintf("exit %d", res.ExitCode)
	if res.TimedOut {
		how = "killed at the timeout"
	}
	out := strings.TrimSpace(res.Output)
	if len(out) > 2000 {
		out = "…" + out[len(out)-2000:]
	}
	return fmt.Sprintf("%s: %s in %s; output: %s", res.Command, how, res.Duration, out)
}

// unprotected tells of termination protection turned off: it is what
// makes a mistake possible again, so the owner hears of it.
func (s *Server) unprotected(ctx context.Context, what, target string) {
	msg := fmt.Sprintf("Termination protection of %s was turned off by %s from %s.", what, actor(ctx).Who, actor(ctx).From)
	s.record(ctx, "protection.off", target, msg)
	s.alert(ctx, "protection.off", target, msg)
}

// hostPower reboots or powers off the server, unless its termination
// protection is on.
func (s *Server) hostPower(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action != "reboot" && action != "poweroff" {
		s.fail(w, notFound(fmt.Sprintf("POST /v1/host/%s: no such action; the actions are reboot and poweroff", action)))
		return
	}
	var req HostRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if st.Server.Protect {
		err := conflict{fmt.Errorf("the server is protected against termination, so moat does not %s it: turn the protection off first (moat host protect off), then %s", action, action)}
		s.record(r.Context(), "host."+action+"_refused", "host", err.Error())
		s.fail(w, err)
		return
	}
	if req.Confirm != action {
		s.fail(w, &config.FieldError{Field: "confirm", Value: req.Confirm, Problem: "is not the word " + action, Fix: "type " + action + " to confirm: every app on the server goes down"})
		return
	}
	s.record(r.Context(), "host."+action, "host", "asked for by "+actor(r.Context()).Who)
	power := s.Power
	if power == nil {
		power = systemctl
	}
	if err := power(context.WithoutCancel(r.Context()), action); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"done": "the server is going down: " + action})
}

// systemctl asks systemd to reboot or power off.
func systemctl(ctx context.Context, action string) error {
	if out, err := exec.CommandContext(ctx, "systemctl", action).CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", action, err, strings.TrimSpace(string(out)))
	}
	return nil
}
