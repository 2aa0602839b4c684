// Package gate keeps private apps private: a visitor without a session
// of the app's domain is sent to moat's sign-in on the admin host (with
// the second step), and comes back with a one-time code that the gate
// trades for a session of that domain alone. The app is told who the
// visitor is (X-Moat-User, X-Moat-Email) and never sees the session's
// cookie.
package gate

import (
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/edge"
)

const (
	// CookieName is the session of one private app's domain. __Host-
	// keeps it to that very host: no other app, not even a subdomain,
	// can read or set it.
	CookieName = "__Host-moat-app"
	// CallbackPath is where the admin host sends a visitor with a
	// one-time code; SignOutPath ends the visitor's session of the app.
	CallbackPath = "/.moat/auth"
	SignOutPath  = "/.moat/signout"
	// SignInPath is the admin host's page that makes the code.
	SignInPath = "/signin/app"
)

// Gate is the sign-in in front of the private apps.
type Gate struct {
	Auth *auth.Service
	// Admin is the admin host's origin, like https://moat.example.com,
	// where people sign in; empty while there is none.
	Admin func() string
	// Client is a request's real address (the edge's ClientIP); the
	// connection's peer when nil.
	Client func(*http.Request) netip.Addr
	Log    *slog.Logger
}

// Wrap returns next behind the gate, for the private app a.
func (g *Gate) Wrap(a config.App, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := hostOf(r.Host)
		switch r.URL.Path {
		case CallbackPath:
			g.callback(w, r, a, h)
			return
		case SignOutPath:
			if c, err := r.Cookie(CookieName); err == nil {
				g.Auth.CloseApp(r.Context(), c.Value)
			}
			clearCookie(w)
			page(w, http.StatusOK, "Signed out", "You are signed out of "+h+".", "/", "Open it again")
			return
		}
		c, err := r.Cookie(CookieName)
		if err != nil || c.Value == "" {
			g.toSignIn(w, r)
			return
		}
		_, acc, err := g.Auth.AppVisitor(r.Context(), c.Value, h)
		switch {
		case errors.Is(err, auth.ErrSession):
			clearCookie(w)
			g.toSignIn(w, r)
			return
		case err != nil:
			g.log().Error("gate: session", "app", a.Name, "err", err)
			page(w, http.StatusInternalServerError, "Not now", "moat could not check your sign-in to this app; try again in a moment.", "", "")
			return
		case !a.Allows(acc.Email, string(acc.Role)):
			page(w, http.StatusForbidden, "Not for your account", NotAllowed(a, acc), "", "")
			return
		}
		user := acc.Name
		if user == "" {
			user = acc.Email
		}
		r2 := r.WithContext(edge.WithVisitor(r.Context(), edge.Visitor{User: user, Email: acc.Email}))
		r2.Header = r.Header.Clone()
		withoutCookie(r2.Header)
		next.ServeHTTP(w, r2)
	})
}

// NotAllowed says why an account may not use a private app, and what to
// do; the admin host's page says it in the same words.
func NotAllowed(a config.App, acc auth.Account) string {
	return fmt.Sprintf("Your account (%s) may not use %s: ask the server's owner to add you to its allow list (moat app set %s --allow %s).", acc.Email, a.Name, a.Name, acc.Email)
}

// toSignIn sends a page visit to the admin host's sign-in, to come back
// to the same address; other requests (a script's, a form's) are
// refused, since a redirect would lose their body.
func (g *Gate) toSignIn(w http.ResponseWriter, r *http.Request) {
	admin := ""
	if g.Admin != nil {
		admin = g.Admin()
	}
	if admin == "" {
		page(w, http.StatusServiceUnavailable, "Sign-in unavailable", "This app is private, and moat's sign-in has no host to run on: set server.admin_domain.", "", "")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "401 Unauthorized: this app is private; sign in at %s first.\n", admin)
		return
	}
	back := "https://" + r.Host + r.URL.RequestURI()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, admin+SignInPath+"?to="+url.QueryEscape(back), http.StatusSeeOther)
}

// callback trades the one-time code for a session of this domain.
func (g *Gate) callback(w http.ResponseWriter, r *http.Request, a config.App, h string) {
	q := r.URL.Query()
	tok, _, acc, err := g.Auth.OpenApp(r.Context(), g.client(r), q.Get("code"), h)
	if err != nil {
		status := http.StatusForbidden
		if !errors.Is(err, auth.ErrAppCode) {
			status = http.StatusInternalServerError
			g.log().Error("gate: open app", "app", a.Name, "err", err)
		}
		page(w, status, "Sign-in link not valid", err.Error(), "/", "Open the app again")
		return
	}
	if !a.Allows(acc.Email, string(acc.Role)) {
		g.Auth.CloseApp(r.Context(), tok)
		page(w, http.StatusForbidden, "Not for your account", NotAllowed(a, acc), "", "")
		return
	}
	// Lax: the visitor arrives from the admin host, another site, and
	// the cookie must come along on this very navigation.
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, SafePath(q.Get("to")), http.StatusSeeOther)
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// withoutCookie drops the gate's cookie from a request's Cookie header:
// the app must never hold the session.
func withoutCookie(h http.Header) {
	var keep []string
	for _, line := range h.Values("Cookie") {
		var parts []string
		for p := range strings.SplitSeq(line, ";") {
			if name, _, _ := strings.Cut(strings.TrimSpace(p), "="); name != CookieName && strings.TrimSpace(p) != "" {
				parts = append(parts, strings.TrimSpace(p))
			}
		}
		if len(parts) > 0 {
			keep = append(keep, strings.Join(parts, "; "))
		}
	}
	h.Del("Cookie")
	for _, v := range keep {
		h.Add("Cookie", v)
	}
}

// SafePath is a path on the same host to go back to: anything else (a
// full URL, //host, /\host) is the app's front page.
func SafePath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

func (g *Gate) client(r *http.Request) auth.Client {
	var a netip.Addr
	if g.Client != nil {
		a = g.Client(r)
	} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		a = ap.Addr().Unmap()
	}
	return auth.Client{Addr: a, Agent: r.UserAgent()}
}

func (g *Gate) log() *slog.Logger {
	if g.Log != nil {
		return g.Log
	}
	return slog.Default()
}

func hostOf(h string) string {
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

var pageTpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}} · moat</title></head>
<body><h1>{{.Title}}</h1><p id="message">{{.Message}}</p>{{with .Link}}<p><a href="{{.}}">{{$.LinkText}}</a></p>{{end}}</body></html>
`))

// page answers with a small page of moat's own.
func page(w http.ResponseWriter, status int, title, message, link, linkText string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	pageTpl.Execute(w, struct{ Title, Message, Link, LinkText string }{title, message, link, linkText})
}
