package web

import (
	"net/http"
	"strings"
)

// resetData is the page that sets a new password from a mailed link.
type resetData struct {
	Token string
}

func (d *Dashboard) resetRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /signin/forgot", func(w http.ResponseWriter, r *http.Request) {
		draw(w, http.StatusOK, "forgot", page{Title: "Forgot your password?"})
	})
	mux.HandleFunc("POST /signin/forgot", func(w http.ResponseWriter, r *http.Request) {
		email := strings.TrimSpace(r.PostFormValue("email"))
		origin := d.origin(r)
		err := d.Auth.RequestPasswordReset(r.Context(), d.client(r), email, func(secret string) string {
			return origin + "/signin/reset?token=" + secret
		})
		p := page{Title: "Forgot your password?", Email: email}
		if err != nil {
			p.Error = err.Error()
		} else {
			p.Notice = "If " + email + " has an account here, a link to set a new password is on its way. It works once, for 30 minutes."
		}
		draw(w, http.StatusOK, "forgot", p)
	})
	mux.HandleFunc("GET /signin/reset", func(w http.ResponseWriter, r *http.Request) {
		draw(w, http.StatusOK, "reset", page{Title: "Set a new password", Data: resetData{Token: r.URL.Query().Get("token")}})
	})
	mux.HandleFunc("POST /signin/reset", func(w http.ResponseWriter, r *http.Request) {
		p := page{Title: "Set a new password", Data: resetData{Token: r.PostFormValue("token")}}
		if r.PostFormValue("new") != r.PostFormValue("repeat") {
			p.Error = "the new password and its repetition differ: type the same new password twice"
			draw(w, http.StatusOK, "reset", p)
			return
		}
		a, err := d.Auth.ResetPassword(r.Context(), d.client(r), r.PostFormValue("token"), r.PostFormValue("new"))
		if err != nil {
			p.Error = err.Error()
			draw(w, http.StatusOK, "reset", p)
			return
		}
		draw(w, http.StatusOK, "signin", page{Title: "Sign in", Email: a.Email, Notice: "Your new password is set, and every session of yours was signed out: sign in with it."})
	})
}

// origin is where the dashboard's links point: the admin host as moat
// serves it, never the Host a request names.
func (d *Dashboard) origin(r *http.Request) string {
	if d.Origin != nil {
		if o := d.Origin(); o != "" {
			return o
		}
	}
	return "https://" + r.Host
}
