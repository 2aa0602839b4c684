package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"moat/internal/auth"
	"moat/internal/secret"
	"moat/internal/store"
)

// CookieName is the session cookie. The __Host- prefix makes browsers
// refuse it unless it is Secure, has Path=/ and no Domain: no other host,
// not even a subdomain app, can set or read it.
const CookieName = "__Host-moat"

// CSRFHeader carries a session's CSRF token on a change made by script;
// a form sends it as the field csrf.
const CSRFHeader = "X-CSRF-Token"

// Remote is the API on the admin host, over HTTPS, for people (signed-in
// sessions) and scripts (API tokens). It serves the same handlers as the
// control socket; what each request may reach is decided in one place,
// authorize, from the route, the account's role and the token's scope.
type Remote struct {
	API  *Server
	Auth *auth.Service
	// Client is a request's real address (the edge's ClientIP); the
	// connection's peer when nil.
	Client func(*http.Request) netip.Addr
	// Pages serves what is not under /v1/: the dashboard. Nil answers
	// 404.
	Pages http.Handler
}

// Handler returns the routes: sign-in, the account's own settings, the
// accounts, and every API route behind authorize; all of it behind a
// cross-origin check, so that another site's page cannot post here with
// the owner's cookie.
func (rm *Remote) Handler() http.Handler {
	mux := http.NewServeMux()
	rm.authRoutes(mux)
	rm.passkeyRoutes(mux)
	// The description of the routes is public, ahead of the guard.
	mux.HandleFunc("GET /v1/openapi.json", rm.API.openAPI)
	mux.Handle("/v1/", rm.guarded(rm.API.Handler()))
	if rm.Pages != nil {
		mux.Handle("/", rm.Pages)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			rm.API.fail(w, notFound("no such page: the API is under /v1/"))
		})
	}
	return http.NewCrossOriginProtection().Handler(mux)
}

// principal is who a request is: an account, through a session or a
// token.
type principal struct {
	account auth.Account
	session *auth.Session
	token   *auth.Token
	// raw is the session cookie's value.
	raw string
}

func (p principal) actor(from netip.Addr) store.Actor {
	who := p.account.Email
	if p.token != nil {
		who = "token " + p.token.Name + " (" + p.token.ID + ") of " + p.account.Email
	}
	return store.Actor{Who: who, From: addrOf(from)}
}

func addrOf(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.Unmap().String()
}

func (rm *Remote) client(r *http.Request) auth.Client { return ClientOf(r, rm.Client) }

// ClientOf is who sent r, for sign-in: its address (addr's answer, or
// the connection's peer when addr is nil) and its user agent.
func ClientOf(r *http.Request, addr func(*http.Request) netip.Addr) auth.Client {
	var a netip.Addr
	if addr != nil {
		a = addr(r)
	} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		a = ap.Addr().Unmap()
	}
	return auth.Client{Addr: a, Agent: r.UserAgent()}
}

// statusError is an error with the HTTP status it deserves.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func unauthorized(err error) error { return &statusError{http.StatusUnauthorized, err} }
func forbidden(err error) error    { return &statusError{http.StatusForbidden, err} }

// authErr gives an auth error its status.
func authErr(w http.ResponseWriter, err error) error {
	var slow *auth.SlowDown
	switch {
	case errors.As(err, &slow):
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((slow.RetryAfter+time.Second-1)/time.Second))))
		return &statusError{http.StatusTooManyRequests, err}
	case errors.Is(err, auth.ErrSignIn), errors.Is(err, auth.ErrSession), errors.Is(err, auth.ErrToken),
		errors.Is(err, auth.ErrCode), errors.Is(err, auth.ErrCodeUsed), errors.Is(err, auth.ErrCodeDead):
		return unauthorized(err)
	}
	return err
}

var errNoCredentials = errors.New("not signed in: sign in (POST /v1/auth/signin), or send Authorization: Bearer moat_…")

// authenticate finds who sent r: a Bearer token, or a signed-in session
// whose changes carry its CSRF token.
func (rm *Remote) authenticate(w http.ResponseWriter, r *http.Request) (principal, error) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return principal{}, unauthorized(errors.New("the Authorization header takes only Bearer moat_… tokens"))
		}
		t, a, err := rm.Auth.Bearer(ctx, rm.client(r), strings.TrimSpace(tok))
		if err != nil {
			return principal{}, authErr(w, err)
		}
		return principal{account: a, token: &t}, nil
	}
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return principal{}, unauthorized(errNoCredentials)
	}
	sess, a, err := rm.Auth.Authenticate(ctx, c.Value)
	if err != nil {
		return principal{}, authErr(w, err)
	}
	if !safeMethod(r.Method) && !secret.Equal(csrfOf(r), sess.CSRF) {
		return principal{}, forbidden(fmt.Errorf("the CSRF token is missing or wrong: send the %s header (GET /v1/me gives it) or the form field csrf", CSRFHeader))
	}
	return principal{account: a, session: &sess, raw: c.Value}, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func csrfOf(r *http.Request) string {
	if v := r.Header.Get(CSRFHeader); v != "" {
		return v
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return r.PostFormValue("csrf")
	}
	return ""
}

// guarded lets through to h only what the request's principal may do.
func (rm *Remote) guarded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := rm.authenticate(w, r)
		if err != nil {
			rm.API.fail(w, err)
			return
		}
		if err := authorize(p, r); err != nil {
			rm.API.fail(w, forbidden(err))
			return
		}
		h.ServeHTTP(w, r.WithContext(WithActor(r.Context(), p.actor(rm.client(r).Addr))))
	})
}

// authorize is the one decision of what a request may reach: the area of
// its route, and whether it changes anything, against the account's role
// and the token's scope.
func authorize(p principal, r *http.Request) error {
	var scope auth.Scope
	if p.token != nil {
		scope = p.token.Scope
	}
	return auth.Allow(p.account.Role, scope, AreaOf(r.Method, r.URL.Path), !safeMethod(r.Method))
}

// AreaOf is the area a route reaches.
func AreaOf(method, path string) auth.Area {
	rest := strings.TrimPrefix(path, "/v1/")
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "apps":
		return auth.AreaApps
	case "firewall":
		return auth.AreaFirewall
	case "guard":
		return auth.AreaGuard
	case "ssh":
		return auth.AreaSSH
	case "mail", "notify":
		return auth.AreaMail
	case "users":
		return auth.AreaAccounts
	case "host", "backup":
		return auth.AreaAll
	case "updates":
		if method != http.MethodGet {
			return auth.AreaAll // they may reboot the server
		}
	case "audit":
		if method != http.MethodGet {
			return auth.AreaFirewall // the fixes moat makes itself are the firewall's
		}
	case "state":
		if method == http.MethodPut {
			return auth.AreaAll
		}
	}
	return auth.AreaServer
}

// withPrincipal runs h for a signed-in session only: an account's own
// settings (password, second factor, tokens, sessions) are not for
// tokens, so that a leaked token cannot make more of itself.
func (rm *Remote) withSession(h func(w http.ResponseWriter, r *http.Request, p principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := rm.authenticate(w, r)
		if err != nil {
			rm.API.fail(w, err)
			return
		}
		if p.session == nil {
			rm.API.fail(w, forbidden(errors.New("an account's own settings are changed from a signed-in session, not with a token")))
			return
		}
		h(w, r.WithContext(WithActor(r.Context(), p.actor(rm.client(r).Addr))), p)
	}
}

// SetSessionCookie hands a browser its session; the dashboard's pages
// and the API share it.
func SetSessionCookie(w http.ResponseWriter, token string) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// ClearSessionCookie ends a browser's session cookie.
func ClearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

func authActor(a store.Actor) auth.Actor { return auth.Actor{Who: a.Who, From: a.From} }

func ctxActor(ctx context.Context) auth.Actor { return authActor(actor(ctx)) }
