package web

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/secret"
)

// The dashboard: moat's pages on the admin host, over the same accounts
// and sessions as the HTTPS API. Every form works without script.

//go:embed pages/*.html
var pageFiles embed.FS

//go:embed assets
var assetFiles embed.FS

// DashboardCSP is the Content-Security-Policy of the dashboard: nothing
// but its own files, no inline script or style, never in a frame.
const DashboardCSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

var factorNames = map[auth.Factor]string{
	auth.FactorEmail:    "the code mailed to you",
	auth.FactorTOTP:     "the authenticator app's code",
	auth.FactorRecovery: "a recovery code",
	auth.FactorPasskey:  "a passkey",
}

// pageNames are the pages, each a template under pages/.
var pageNames = []string{"signin", "second", "overview", "security", "plan", "bans", "activity", "account", "totp", "shown", "forgot", "reset", "private", "apps", "ran", "audit"}

// pages are the templates, each page with the layout.
func pages() map[string]*template.Template {
	funcs := template.FuncMap{
		"factorName": func(f auth.Factor) string { return factorNames[f] },
		"when":       when,
		"millis":     func(t time.Time) int64 { return t.UnixMilli() },
	}
	layout := template.Must(template.New("layout").Funcs(funcs).ParseFS(pageFiles, "pages/layout.html"))
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		out[name] = template.Must(template.Must(layout.Clone()).ParseFS(pageFiles, "pages/"+name+".html"))
	}
	return out
}

// Dashboard serves the pages.
type Dashboard struct {
	Auth *auth.Service
	// Client is a request's real address (the edge's ClientIP); the
	// connection's peer when nil.
	Client func(*http.Request) netip.Addr
	Log    *slog.Logger
	// API is the HTTPS API's handler (api.Remote's), that every page
	// asks, as the signed-in browser.
	API http.Handler
	// Origin is where links mailed to people point, like
	// https://admin.example.com; the request's own host when nil.
	Origin func() string
	// PrivateApp is the private app that serves a host, if one does.
	PrivateApp func(host string) (config.App, bool)
}

// page is what every page's template reads.
type page struct {
	Title   string
	Error   string
	Notice  string
	Account *auth.Account
	CSRF    string
	// Tab is the navigation's current tab, Tabs all of them.
	Tab  string
	Tabs []struct{ Path, Name string }
	// Sign-in.
	Email     string
	Needs     []auth.Factor
	EmailCode bool
	Passkey   bool
	// Next is where a finished sign-in goes: a path of the dashboard's.
	Next string
	// Refresh sends the browser on to this path of the dashboard's.
	Refresh string
	// Data is the page's own.
	Data any
}

// tabs are the navigation's, in order.
var tabs = []struct{ Path, Name string }{
	{"/", "Overview"}, {"/apps", "Apps"}, {"/security", "Security"}, {"/bans", "Bans"}, {"/audit", "Audit"}, {"/activity", "Activity"}, {"/account", "Account"},
}

// nextOf is the page a sign-in goes on to (the form's or the query's
// next): a path of this host, or the Overview.
func nextOf(r *http.Request) string {
	n := r.FormValue("next")
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.HasPrefix(n, "/\\") || strings.ContainsAny(n, "\r\n") {
		return "/"
	}
	return n
}

// onward ends a sign-in at next. A sign-in on its way to a private app
// goes on from a page, not a redirect: the form's post must not end on
// another site (the CSP's form-action refuses that, rightly).
func onward(w http.ResponseWriter, r *http.Request, draw render, next string) {
	if next == "/" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	draw(w, http.StatusOK, "private", page{Title: "Signed in", Refresh: next, Data: privateData{Link: next}})
}

// when is a time for a person: the date and time in UTC.
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2 Jan 2006 15:04 UTC")
}

// Handler returns the pages' routes.
func (d *Dashboard) Handler() http.Handler {
	tpl := pages()
	assets, _ := fs.Sub(assetFiles, "assets")
	mux := http.NewServeMux()
	files := http.FileServerFS(assets)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/assets/icon.svg", http.StatusMovedPermanently)
	})
	render := func(w http.ResponseWriter, status int, name string, p page) {
		p.Tabs = tabs
		var buf bytes.Buffer
		if err := tpl[name].ExecuteTemplate(&buf, "layout", p); err != nil {
			d.log().Error("web: render", "page", name, "err", err)
			http.Error(w, "the page could not be drawn", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		w.Write(buf.Bytes())
	}
	mux.HandleFunc("GET /signin", func(w http.ResponseWriter, r *http.Request) {
		render(w, http.StatusOK, "signin", page{Title: "Sign in", Next: nextOf(r)})
	})
	mux.HandleFunc("POST /signin", func(w http.ResponseWriter, r *http.Request) {
		email, next := r.PostFormValue("email"), nextOf(r)
		in, err := d.Auth.SignIn(r.Context(), d.client(r), email, r.PostFormValue("password"))
		if err != nil {
			render(w, http.StatusOK, "signin", page{Title: "Sign in", Error: err.Error(), Email: email, Next: next})
			return
		}
		api.SetSessionCookie(w, in.Token)
		if in.Session.Stage == auth.StageFull {
			onward(w, r, render, next)
			return
		}
		needs := make([]string, len(in.Needs))
		for i, f := range in.Needs {
			needs[i] = string(f)
		}
		http.Redirect(w, r, "/signin/second?needs="+url.QueryEscape(strings.Join(needs, ","))+"&next="+url.QueryEscape(next), http.StatusSeeOther)
	})
	second := func(r *http.Request, errMsg string) page {
		p := page{Title: "Second step", Error: errMsg, Next: nextOf(r)}
		for _, f := range strings.Split(r.FormValue("needs"), ",") {
			// A passkey is a button of the script's, not a code.
			if f := auth.Factor(f); f == auth.FactorPasskey {
				p.Passkey = true
			} else if factorNames[f] != "" {
				p.Needs = append(p.Needs, f)
				p.EmailCode = p.EmailCode || f == auth.FactorEmail
			}
		}
		if len(p.Needs) == 0 {
			p.Needs = []auth.Factor{auth.FactorEmail, auth.FactorTOTP, auth.FactorRecovery}
		}
		return p
	}
	mux.HandleFunc("GET /signin/second", func(w http.ResponseWriter, r *http.Request) {
		render(w, http.StatusOK, "second", second(r, ""))
	})
	mux.HandleFunc("POST /signin/second", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(api.CookieName)
		if err != nil {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		in, err := d.Auth.Second(r.Context(), d.client(r), c.Value, auth.Factor(r.PostFormValue("factor")), r.PostFormValue("code"))
		if err != nil {
			if errors.Is(err, auth.ErrSession) {
				render(w, http.StatusOK, "signin", page{Title: "Sign in", Error: "The sign-in took too long or has ended: start again."})
				return
			}
			render(w, http.StatusOK, "second", second(r, err.Error()))
			return
		}
		api.SetSessionCookie(w, in.Token)
		onward(w, r, render, nextOf(r))
	})
	mux.HandleFunc("POST /signin/code", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(api.CookieName)
		if err == nil {
			err = d.Auth.ResendCode(r.Context(), d.client(r), c.Value)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		p := second(r, msg)
		p.Needs, p.EmailCode = []auth.Factor{auth.FactorEmail, auth.FactorRecovery}, true
		render(w, http.StatusOK, "second", p)
	})
	mux.HandleFunc("POST /signout", func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(api.CookieName); err == nil {
			if sess, _, err := d.Auth.Authenticate(r.Context(), c.Value); err == nil && secret.Equal(r.PostFormValue("csrf"), sess.CSRF) {
				d.Auth.SignOut(r.Context(), c.Value)
				api.ClearSessionCookie(w)
			}
		}
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
	})
	d.signedInRoutes(mux, render)
	d.resetRoutes(mux, render)
	d.privateRoutes(mux, render)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", DashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/assets/") {
			h.Set("Cache-Control", "no-store")
		}
		mux.ServeHTTP(w, r)
	})
}

func (d *Dashboard) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.Default()
}

func (d *Dashboard) client(r *http.Request) auth.Client { return api.ClientOf(r, d.Client) }
