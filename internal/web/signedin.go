package web

import (
	"errors"
	"net/http"
	"net/url"

	"moat/internal/api"
)

// render draws a page with the layout.
type render func(w http.ResponseWriter, status int, name string, p page)

// notices are what a page says after a change, by the code in its
// ?done= (a code, not text: a link cannot make the page say anything).
var notices = map[string]string{
	"saved":       "Done: the change is stored and applied.",
	"applied":     "The firewall's rules are in force.",
	"trial":       "The new rules are on trial: confirm them below, or they roll back by themselves.",
	"confirmed":   "Confirmed: the new rules stay.",
	"unbanned":    "The ban is lifted.",
	"removed":     "The app is removed. Its backup is kept for the grace period: restore it below to bring it back.",
	"restored":    "The app is back: its data, its settings and its routes.",
	"ignored":     "Your address is on the guard's ignore list: it is never banned.",
	"password":    "Your password is changed; your other sessions are signed out.",
	"mfa-off":     "The second step is off: signing in takes only your password now.",
	"updates-on":  "Unattended security updates are on.",
	"updates-off": "Unattended updates are off: moat's settings are removed.",

	"passkey-added":        "The passkey is added: it signs you in without a password, or as the second step.",
	"passkey-removed":      "The passkey is removed: it no longer signs in.",
	"token-revoked":        "The token is revoked: it no longer works.",
	"signed-out-elsewhere": "Every other session of yours is signed out.",
}

// signedIn runs h for a browser with a full session, the page's account
// and CSRF token filled in; others go to the sign-in page.
func (d *Dashboard) signedIn(tab string, h func(w http.ResponseWriter, r *http.Request, p page)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(api.CookieName)
		if err != nil {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		sess, a, err := d.Auth.Authenticate(r.Context(), c.Value)
		if err != nil {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		h(w, r, page{Account: &a, CSRF: sess.CSRF, Tab: tab, Notice: notices[r.URL.Query().Get("done")]})
	}
}

func (d *Dashboard) signedInRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /{$}", d.signedIn("Overview", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title, p.Data = "Overview", d.overview(r)
		draw(w, http.StatusOK, "overview", p)
	}))
	d.appsRoutes(mux, draw)
	d.auditRoutes(mux, draw)
	d.securityRoutes(mux, draw)
	d.guardRoutes(mux, draw)
	d.accountRoutes(mux, draw)
}

// done sends the browser back to a page after a change, saying so.
func done(w http.ResponseWriter, r *http.Request, back, code string) {
	u, err := url.Parse(back)
	if err != nil || u.Host != "" || u.Scheme != "" {
		u = &url.URL{Path: "/"}
	}
	q := u.Query()
	q.Set("done", code)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// errText is an error as a page shows it: the API's refusal in its own
// words, or what went wrong.
func errText(err error) string {
	var ref *refusal
	if errors.As(err, &ref) {
		return ref.Error()
	}
	return "moat could not do this: " + err.Error()
}
