// Package api is moat's one set of handlers: the JSON API that the CLI
// (over the root-only control socket, or in-process when no daemon runs)
// and later the dashboard and remote clients use. Every change goes
// through the store in one transaction that also writes the activity log,
// and then to the running reconcilers.
//
// It does not parse command lines or render pages.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"moat/internal/audit"
	"moat/internal/auth"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/notify"
	"moat/internal/store"
	"moat/internal/updates"
)

// Runtime is the running daemon as the API sees it: it can check a state
// before it is stored, apply it after, and report what is live. Without a
// daemon it is nil.
type Runtime interface {
	// Check refuses a state the running daemon could not serve (a CA
	// roots file it cannot read, a port it cannot bind), changing nothing.
	Check(ctx context.Context, s config.State) error
	// Apply makes the running edge serve s.
	Apply(ctx context.Context, s config.State) error
	// Certificates reports each domain's certificate status.
	Certificates() []certs.Status
	// Firewall is the daemon's hold on the kernel's firewall, nil when it
	// does not manage it.
	Firewall() Firewall
	// Guard is the daemon's brute-force guard.
	Guard() Guard
	// SSH is the daemon's hold on sshd, nil when it leaves sshd alone.
	SSH() SSH
	// Mail is the daemon's mail relay and delivery.
	Mail() Mail
	// Notify sends an alert everywhere alerts go.
	Notify(ctx context.Context, a notify.Alert) error
}

// Server holds the handlers' dependencies.
type Server struct {
	Store   store.Store
	Runtime Runtime // nil when no daemon runs
	Log     *slog.Logger
	// Auth is the accounts; nil where they are not open (the routes of
	// /v1/users then say so).
	Auth *auth.Service
	// Sessions lists the peers of the TCP connections open to a local
	// port (the SSH sessions a firewall change must not cut);
	// firewall.EstablishedPeers, reading /proc/net, when nil.
	Sessions func(port uint16) []netip.Addr

	// Conns lists the remote ends of the TCP connections open to a local
	// port (the SSH sessions open when sshd is hardened);
	// firewall.EstablishedConns when nil.
	Conns func(port uint16) []netip.AddrPort
	// Updates is the machine whose unattended updates moat sets up;
	// this one when zero.
	Updates updates.Host
	// DockerSocket is the Docker Engine API the audit asks about
	// containers; /var/run/docker.sock when empty.
	DockerSocket string
	// Proc is where the audit reads the listening sockets; /proc, for
	// moat's own network namespace, when zero.
	Proc audit.Proc
	// DataDir is moat's data dir, where the backups' password and
	// staging live; backups are refused without it.
	DataDir string
	// OnBackup, when set, hears of every backup run (app "" is moat's
	// own), for the daemon's metrics.
	OnBackup func(app string, runs []BackupRun)
	// Now is the clock of grace periods; time.Now when nil.
	Now func() time.Time
	// Lifecycle runs the apps' lifecycle commands; apps.Runner when nil.
	Lifecycle Lifecycle
	// Power reboots or powers off the host ("reboot", "poweroff");
	// systemctl when nil. Tests replace it: a test never reboots the
	// machine it runs on.
	Power func(ctx context.Context, action string) error

	// sshMu orders hardenings and confirmations.
	sshMu sync.Mutex

	// applyMu orders Runtime.Apply calls and applied is the newest
	// revision handed to it: two changes stored one after the other may
	// reach this point in the other order, and the older state must not
	// be applied last.
	applyMu sync.Mutex
	applied int64
}

type actorKey struct{}

// WithActor marks a request context with who is making the change.
func WithActor(ctx context.Context, a store.Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

func actor(ctx context.Context) store.Actor {
	if a, ok := ctx.Value(actorKey{}).(store.Actor); ok {
		return a
	}
	return store.Actor{Who: "unknown", From: "unknown"}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/state", s.getState)
	mux.HandleFunc("PUT /v1/state", s.putState)
	mux.HandleFunc("PATCH /v1/server", s.patchServer)
	mux.HandleFunc("GET /v1/apps", s.listApps)
	mux.HandleFunc("GET /v1/removed-apps", s.listRemoved)
	s.auditRoutes(mux)
	s.updatesRoutes(mux)
	mux.HandleFunc("POST /v1/apps", s.addApp)
	mux.HandleFunc("GET /v1/apps/{name}", s.getApp)
	mux.HandleFunc("PATCH /v1/apps/{name}", s.patchApp)
	mux.HandleFunc("DELETE /v1/apps/{name}", s.removeApp)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/activity", s.activity)
	mux.HandleFunc("GET /v1/config", s.effective)
	mux.HandleFunc("GET /v1/openapi.json", s.openAPI)
	s.firewallRoutes(mux)
	s.guardRoutes(mux)
	s.sshRoutes(mux)
	s.sshHardenRoutes(mux)
	s.mailRoutes(mux)
	s.userRoutes(mux)
	s.lifecycleRoutes(mux)
	s.backupRoutes(mux)
	s.fallback(mux)
	return mux
}

// fallback answers what no route takes in the API's own error body: 405
// with the methods the path takes, or 404.
func (s *Server) fallback(mux *http.ServeMux) {
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.fail(w, &statusError{http.StatusMethodNotAllowed, fmt.Errorf("%s %s: this path takes %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
			return
		}
		s.fail(w, notFound(fmt.Sprintf("%s %s: no such route; the routes are listed in GET /v1/openapi.json", r.Method, r.URL.Path)))
	})
}

// Error is the API's error body, the same for every refusal:
// {"error": {"message", "field", "value", "fix"}}, with every refused
// field listed when there are several.
type Error struct {
	Error Problem `json:"error"`
}

// Problem says what was wrong. Field, Value and Fix are set when the
// refusal is about one field of the input.
type Problem struct {
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Value   string `json:"value,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Fields lists each refused field, when the refusal is about input.
	Fields []FieldError `json:"fields,omitempty"`
}

// FieldError is one refused field.
type FieldError struct {
	Field   string `json:"field"`
	Value   string `json:"value"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// fail writes err with the status it deserves: input errors are 400 and
// list their fields.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code, body := s.problem(err)
	writeJSON(w, code, body)
}

// problem is the status and body a failure deserves.
func (s *Server) problem(err error) (int, Error) {
	var body Error
	body.Error.Message = err.Error()
	code := http.StatusInternalServerError
	var nf notFound
	var cf conflict
	var se *statusError
	switch {
	case errors.As(err, &se):
		code = se.code
	case errors.As(err, &nf), errors.Is(err, auth.ErrNotFound):
		code = http.StatusNotFound
	case errors.As(err, &cf):
		code = http.StatusConflict
	case isInput(err):
		code = http.StatusBadRequest
	}
	for _, fe := range fieldErrors(err) {
		body.Error.Fields = append(body.Error.Fields, FieldError{Field: fe.Field, Value: fe.Value, Message: fe.Problem, Fix: fe.Fix})
	}
	if len(body.Error.Fields) == 1 {
		f := body.Error.Fields[0]
		body.Error.Field, body.Error.Value, body.Error.Fix = f.Field, f.Value, f.Fix
	}
	if code == http.StatusInternalServerError {
		s.Log.Error("api", "err", err)
		body.Error.Message = "moat could not do this: " + err.Error()
	}
	return code, body
}

type notFound string

func (n notFound) Error() string { return string(n) }

// inputError marks a refusal of what the caller sent.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

func isInput(err error) bool {
	var (
		ie inputError
		re *auth.Refusal
	)
	return errors.As(err, &ie) || errors.As(err, &re) || len(fieldErrors(err)) > 0
}

func fieldErrors(err error) []*config.FieldError {
	var out []*config.FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*config.FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// decode reads a JSON body strictly: an unknown field is refused by name.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return inputError{fmt.Errorf("request body: %w", err)}
	}
	return nil
}

// StateResponse is the desired state with its revision.
type StateResponse struct {
	State    config.State `json:"state"`
	Revision int64        `json:"revision"`
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	st, rev, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if !onTheBox(r.Context()) {
		// Secrets stay on the server: off it, even an admin reads the
		// state without them (and writing it back keeps them).
		st = st.Redacted()
	}
	writeJSON(w, http.StatusOK, StateResponse{State: st, Revision: rev})
}

// ChangeResponse says what a change did, or would do on a dry run.
type ChangeResponse struct {
	Plan     config.Plan `json:"plan"`
	Revision int64       `json:"revision"`
	DryRun   bool        `json:"dry_run,omitempty"`
	// Warning is set when the change was stored but the running daemon
	// could not apply it.
	Warning string `json:"warning,omitempty"`
}

// update runs one change through validation, the runtime's check, the
// store and the runtime, in that order, so that a refused change leaves
// everything as it was.
func (s *Server) update(w http.ResponseWriter, r *http.Request, fn func(*config.State) error) {
	s.updateThen(w, r, fn, nil)
}

// updateThen is update, with after run once the change is stored (not
// on a dry run).
func (s *Server) updateThen(w http.ResponseWriter, r *http.Request, fn func(*config.State) error, after func(context.Context)) {
	dry := r.URL.Query().Get("dry_run") == "true"
	out, err := s.change(r.Context(), dry, fn)
	if err != nil {
		s.fail(w, err)
		return
	}
	if after != nil && !dry {
		after(r.Context())
	}
	writeJSON(w, http.StatusOK, out)
}

// change is update's work: fn's change stored, checked and applied
// (only planned, with dry).
func (s *Server) change(ctx context.Context, dry bool, fn func(*config.State) error) (ChangeResponse, error) {
	var next config.State
	res, err := s.Store.Update(ctx, actor(ctx), dry, func(st *config.State) error {
		if err := fn(st); err != nil {
			return err
		}
		st.Normalize()
		if err := st.Validate(); err != nil {
			return err
		}
		if s.Runtime != nil {
			if err := s.Runtime.Check(ctx, *st); err != nil {
				return inputError{err}
			}
		}
		next = st.Clone()
		return nil
	})
	if err != nil {
		return ChangeResponse{}, err
	}
	out := ChangeResponse{Plan: res.Plan, Revision: res.Revision, DryRun: dry}
	if !dry && s.Runtime != nil {
		// An empty plan still applies when an earlier apply of this
		// revision failed: writing the same file again is the retry.
		if err := s.apply(ctx, res.Revision, next); err != nil {
			s.Log.Error("apply", "err", err)
			out.Warning = "stored, but the running daemon could not apply it: " + err.Error()
		}
	}
	return out, nil
}

// apply hands the state of revision rev to the runtime, unless a newer
// revision was handed to it already.
// MarkApplied tells the server that the runtime already serves revision
// rev, as the daemon does after applying the stored state at start.
func (s *Server) MarkApplied(rev int64) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.applied = max(s.applied, rev)
}

func (s *Server) apply(ctx context.Context, rev int64, st config.State) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if rev <= s.applied {
		return nil // this state, or a newer one that includes it, is live
	}
	if err := s.Runtime.Apply(ctx, st); err != nil {
		return err
	}
	s.applied = rev
	return nil
}

func (s *Server) putState(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		s.fail(w, inputError{fmt.Errorf("request body: %w", err)})
		return
	}
	want, err := config.Parse(body)
	if err != nil {
		s.fail(w, inputError{err})
		return
	}
	s.update(w, r, func(st *config.State) error {
		want.KeepSecrets(*st)
		*st = want
		return nil
	})
}

// ServerPatch changes some server settings; absent fields stay.
type ServerPatch struct {
	Domain *string `json:"domain,omitempty"`
	Email  *string `json:"email,omitempty"`
	// Protect turns the host's termination protection on or off.
	Protect *bool `json:"protect,omitempty"`
}

func (s *Server) patchServer(w http.ResponseWriter, r *http.Request) {
	var p ServerPatch
	if err := decode(r, &p); err != nil {
		s.fail(w, err)
		return
	}
	off := false
	s.updateThen(w, r, func(st *config.State) error {
		if p.Domain != nil {
			st.Server.Domain = *p.Domain
		}
		if p.Email != nil {
			st.Server.Email = *p.Email
		}
		if p.Protect != nil {
			off = st.Server.Protect && !*p.Protect
			st.Server.Protect = *p.Protect
		}
		return nil
	}, func(ctx context.Context) {
		if off {
			s.unprotected(ctx, "the server", "host")
		}
		if p.Protect != nil {
			// Updates never reboot a protected server.
			if err := s.Updates.Refresh(updates.Options{NoReboot: *p.Protect}); err != nil {
				s.Log.Error("updates: the reboot setting", "err", err)
			}
		}
	})
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	page(s, w, r, st.Apps)
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	a, ok := st.App(r.PathValue("name"))
	if !ok {
		s.fail(w, noApp(r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func noApp(name string) error {
	return notFound(fmt.Sprintf("no app named %q: `moat app list` shows the apps", name))
}

func (s *Server) addApp(w http.ResponseWriter, r *http.Request) {
	var a config.App
	if err := decode(r, &a); err != nil {
		s.fail(w, err)
		return
	}
	if a.Run != (config.Run{}) && !onTheBox(r.Context()) {
		s.fail(w, forbidden(errors.New("run: lifecycle commands run as root on the server: set them in moat.yaml with moat apply, or with the CLI on the server")))
		return
	}
	s.update(w, r, func(st *config.State) error {
		if _, exists := st.App(a.Name); exists {
			return &config.FieldError{Field: "name", Value: a.Name, Problem: "is already an app", Fix: "choose another name, or change it with `moat app set " + a.Name + "`"}
		}
		if err := domainsFree(st, a.Name, a.Domains); err != nil {
			return err
		}
		if err := validateApp(st.Server, a); err != nil {
			return err
		}
		st.Apps = append(st.Apps, a)
		return nil
	})
}

// AppPatch changes some of an app's fields; absent fields stay.
type AppPatch struct {
	Domains  *[]string         `json:"domains,omitempty"`
	Upstream *string           `json:"upstream,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"` // merged; "" removes a default
	// ResetHeaders drops every override before Headers is merged.
	ResetHeaders bool `json:"reset_headers,omitempty"`
	// Ports replaces the app's ports (an empty list removes them).
	Ports *[]config.AppPort `json:"ports,omitempty"`
	// Protect turns the app's termination protection on or off.
	Protect *bool `json:"protect,omitempty"`
	// RateLimit replaces the app's own rate limit (an empty one falls
	// back to the server's); Cache its output cache.
	RateLimit *config.RateLimit `json:"rate_limit,omitempty"`
	Cache     *config.Cache     `json:"cache,omitempty"`
	// Access is public or private; Allow replaces who may use a private
	// app (an empty list: every account).
	Access *string   `json:"access,omitempty"`
	Allow  *[]string `json:"allow,omitempty"`
}

func (s *Server) patchApp(w http.ResponseWriter, r *http.Request) {
	var p AppPatch
	if err := decode(r, &p); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	off := false
	s.updateThen(w, r, func(st *config.State) error {
		a, ok := st.App(name)
		if !ok {
			return noApp(name)
		}
		if p.Protect != nil {
			off = a.Protect && !*p.Protect
			a.Protect = *p.Protect
		}
		if p.Domains != nil {
			if err := domainsFree(st, name, *p.Domains); err != nil {
				return err
			}
			a.Domains = *p.Domains
		}
		if p.Upstream != nil {
			a.Upstream = *p.Upstream
		}
		if p.ResetHeaders {
			a.Headers = nil
		}
		if p.Ports != nil {
			a.Ports = *p.Ports
		}
		if p.RateLimit != nil {
			a.RateLimit = *p.RateLimit
		}
		if p.Cache != nil {
			a.Cache = *p.Cache
		}
		if p.Access != nil {
			a.Access = *p.Access
		}
		if p.Allow != nil {
			a.Allow = *p.Allow
		}
		for k, v := range p.Headers {
			if a.Headers == nil {
				a.Headers = map[string]string{}
			}
			a.Headers[k] = v
		}
		return validateApp(st.Server, *a)
	}, func(ctx context.Context) {
		if off {
			s.unprotected(ctx, "app "+name, name)
		}
	})
}

// validateApp checks one app on its own (with the server it runs on),
// so that a refusal names the app's fields (upstream, domains[0]) rather
// than its place in the state.
func validateApp(srv config.Server, a config.App) error {
	one := config.State{Server: srv, Apps: []config.App{a.Clone()}}
	one.Normalize()
	err := one.Validate()
	for _, fe := range fieldErrors(err) {
		fe.Field = strings.TrimPrefix(fe.Field, "apps[0].")
	}
	return err
}

// domainsFree refuses the domains of app name that another app already
// routes, naming that app. Validate refuses them too, but it sees the apps
// sorted by name, and when the changed app sorts first it blames the app
// that had the domain all along.
func domainsFree(st *config.State, name string, domains []string) error {
	n := config.State{Apps: []config.App{{Name: name, Domains: slices.Clone(domains)}}}
	n.Normalize() // the spelling Validate compares
	var errs []error
	for j, d := range n.Apps[0].Domains {
		for _, o := range st.Apps {
			if o.Name != name && slices.Contains(o.Domains, d) {
				errs = append(errs, &config.FieldError{
					Field: fmt.Sprintf("domains[%d]", j), Value: d, Problem: "is already used by app " + o.Name,
					Fix: "a domain routes to one app only: take it from " + o.Name + " first (`moat app set " + o.Name + " --domain ...`), or choose another",
				})
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Server) removeApp(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	q := r.URL.Query()
	typed, noGrace := q.Get("confirm"), q.Get("no_grace_backup")
	drop := func(st *config.State) error {
		for i, a := range st.Apps {
			if a.Name == name {
				if err := protectedApp(a, "remove"); err != nil {
					return err
				}
				if typed != name {
					return &config.FieldError{Field: "confirm", Value: typed, Problem: "is not the app's name", Fix: "type the app's name, " + name + ", to remove it (moat app remove " + name + " asks for it; the API takes ?confirm=" + name + ")"}
				}
				if noGrace != "" && noGrace != name {
					return &config.FieldError{Field: "no_grace_backup", Value: noGrace, Problem: "is not the app's name", Fix: "type the app's name a second time to remove it with no backup to bring it back from"}
				}
				st.Apps = append(st.Apps[:i], st.Apps[i+1:]...)
				return nil
			}
		}
		return noApp(name)
	}
	if q.Get("dry_run") == "true" {
		s.update(w, r, drop)
		return
	}
	out, err := s.removeWithGrace(r.Context(), name, noGrace != "", drop)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// StatusResponse is what `moat status` shows.
type StatusResponse struct {
	// Daemon is true when a running daemon answered; certificate states
	// come only from it.
	Daemon       bool           `json:"daemon"`
	Revision     int64          `json:"revision"`
	Server       config.Server  `json:"server"`
	Apps         []config.App   `json:"apps"`
	Certificates []certs.Status `json:"certificates"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, rev, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := StatusResponse{Revision: rev, Server: st.Server, Apps: st.Apps}
	if s.Runtime != nil {
		out.Daemon = true
		out.Certificates = s.Runtime.Certificates()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) activity(w http.ResponseWriter, r *http.Request) {
	q, err := activityQuery(r.URL.Query())
	if err != nil {
		s.fail(w, err)
		return
	}
	es, err := s.Store.Activity(r.Context(), q)
	if err != nil {
		s.fail(w, err)
		return
	}
	if es == nil {
		es = []store.Entry{}
	}
	writeJSON(w, http.StatusOK, es)
}

// activityQuery reads GET /v1/activity's filters: target, who, action,
// since and until (RFC 3339 times or dates), limit, and before (the ID
// to page back from).
func activityQuery(v url.Values) (store.Query, error) {
	q := store.Query{Target: v.Get("target"), Who: v.Get("who"), Action: v.Get("action")}
	for _, c := range []struct {
		name string
		to   *int64
	}{{"limit", nil}, {"before", &q.Before}} {
		raw := v.Get(c.name)
		if raw == "" {
			continue
		}
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 0 {
			return q, inputError{fmt.Errorf("%s: %q is not a count: give a whole number like 50", c.name, raw)}
		}
		if c.to == nil {
			q.Limit = int(min(n, 1000))
		} else {
			*c.to = n
		}
	}
	for _, c := range []struct {
		name string
		to   *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		raw := v.Get(c.name)
		if raw == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, raw)
		if err != nil {
			t, err = time.Parse(time.DateOnly, raw)
		}
		if err != nil {
			return q, &config.FieldError{Field: c.name, Value: raw, Problem: "is not a time", Fix: "write a date like 2026-12-07, or a time like 2026-12-07T09:30:00Z"}
		}
		*c.to = t
	}
	return q, nil
}
