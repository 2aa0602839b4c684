package web

import (
	"net/http"
	"net/url"

	"moat/internal/api"
	"moat/internal/gate"
)

// privateData is the page on the way to a private app: a refusal, or a
// step on the way (the browser goes on by itself).
type privateData struct {
	App  string
	Link string
}

// privateRoutes are the admin host's side of private apps: a signed-in
// account is sent on to the app's domain with a one-time code.
func (d *Dashboard) privateRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET "+gate.SignInPath, func(w http.ResponseWriter, r *http.Request) {
		p := page{Title: "Private app"}
		to, err := url.Parse(r.URL.Query().Get("to"))
		if err != nil || to.Scheme != "https" || to.Host == "" || d.PrivateApp == nil {
			p.Error = "this is not the address of a private app: open the app itself, and it sends you here"
			draw(w, http.StatusOK, "private", p)
			return
		}
		host := to.Hostname()
		a, ok := d.PrivateApp(host)
		if !ok {
			p.Error = host + " is no private app of this server: open the app itself, and it sends you here"
			draw(w, http.StatusOK, "private", p)
			return
		}
		p.Data = privateData{App: a.Name}
		c, err := r.Cookie(api.CookieName)
		var sessErr error = err
		if err == nil {
			_, acc, err := d.Auth.Authenticate(r.Context(), c.Value)
			sessErr = err
			if err == nil && !a.Allows(acc.Email, string(acc.Role)) {
				p.Error = gate.NotAllowed(a, acc)
				draw(w, http.StatusOK, "private", p)
				return
			}
		}
		if sessErr != nil {
			here := gate.SignInPath + "?to=" + url.QueryEscape(to.String())
			if r.URL.Query().Get("again") == "" {
				// Coming from the app's domain, another site, the browser
				// kept the session's (SameSite=Strict) cookie back: one
				// step from this page of the admin host's own sends it.
				p.Refresh = here + "&again=1"
				p.Data = privateData{App: a.Name, Link: p.Refresh}
				draw(w, http.StatusOK, "private", p)
				return
			}
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(here), http.StatusSeeOther)
			return
		}
		code, err := d.Auth.AppCode(r.Context(), c.Value, host)
		if err != nil {
			p.Error = errText(err)
			draw(w, http.StatusOK, "private", p)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, "https://"+to.Host+gate.CallbackPath+"?code="+url.QueryEscape(code)+"&to="+url.QueryEscape(gate.SafePath(to.RequestURI())), http.StatusSeeOther)
	})
}
