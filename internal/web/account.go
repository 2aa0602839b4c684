package web

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/boombuler/barcode/qr"

	"moat/internal/api"
	"moat/internal/auth"
)

// accountData is the Account tab: the password, the second factor,
// recovery codes, passkeys, API tokens and sessions.
type accountData struct {
	Me       api.Me
	Passkeys []api.PasskeyInfo
	Tokens   []api.TokenInfo
	Sessions []api.SessionInfo
	Scopes   []auth.Scope
}

// shownData is a page that shows secrets once: recovery codes, a new
// token, a new authenticator's secret.
type shownData struct {
	Codes []string
	Token string
	// The authenticator's enrolment.
	Secret string
	QR     template.HTML
}

var tokenScopes = []auth.Scope{auth.ScopeRead, auth.ScopeWrite, auth.ScopeApps, auth.ScopeFirewall, auth.ScopeGuard, auth.ScopeSSH, auth.ScopeMail, auth.ScopeAdmin}

func (d *Dashboard) accountRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /account", d.signedIn("Account", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Account"
		data := accountData{Scopes: tokenScopes}
		for _, c := range []struct {
			path string
			out  any
		}{{"/v1/me", &data.Me}, {"/v1/me/passkeys", &data.Passkeys}, {"/v1/me/tokens", &data.Tokens}, {"/v1/me/sessions", &data.Sessions}} {
			if err := d.call(r, http.MethodGet, c.path, nil, c.out); err != nil {
				p.Error = errText(err)
			}
		}
		p.Data = data
		draw(w, http.StatusOK, "account", p)
	}))
	post := func(path string, h func(w http.ResponseWriter, r *http.Request, p page)) {
		mux.HandleFunc("POST "+path, d.signedIn("Account", h))
	}
	post("/account/password", func(w http.ResponseWriter, r *http.Request, p page) {
		if r.PostFormValue("new") != r.PostFormValue("repeat") {
			d.refused(w, r, p, draw, "/account#password", "the new password and its repetition differ: type the same new password twice")
			return
		}
		req := api.PasswordRequest{Current: r.PostFormValue("current"), New: r.PostFormValue("new")}
		if err := d.callFor(w, r, http.MethodPut, "/v1/me/password", req, nil); err != nil {
			d.refused(w, r, p, draw, "/account#password", errText(err))
			return
		}
		done(w, r, "/account", "password")
	})
	post("/account/totp", func(w http.ResponseWriter, r *http.Request, p page) {
		var en api.TOTPEnrolment
		if err := d.call(r, http.MethodPost, "/v1/me/totp", nil, &en); err != nil {
			d.refused(w, r, p, draw, "/account#mfa", errText(err))
			return
		}
		svg, err := qrSVG(en.URL)
		if err != nil {
			d.refused(w, r, p, draw, "/account#mfa", "the QR code could not be drawn: "+err.Error()+"; type the secret into the app instead")
			return
		}
		p.Title, p.Data = "Set up an authenticator app", shownData{Secret: en.Secret, QR: svg}
		draw(w, http.StatusOK, "totp", p)
	})
	post("/account/totp/confirm", func(w http.ResponseWriter, r *http.Request, p page) {
		var out api.RecoveryCodes
		if err := d.callFor(w, r, http.MethodPost, "/v1/me/totp/confirm", api.CodeRequest{Code: strings.TrimSpace(r.PostFormValue("code"))}, &out); err != nil {
			d.refused(w, r, p, draw, "/account#mfa", errText(err)+". Start the setup again: the code must come from the app that scanned this page's QR code.")
			return
		}
		p.CSRF = out.CSRF
		d.showCodes(w, p, draw, "The authenticator app is set up", out.Codes)
	})
	post("/account/recovery-codes", func(w http.ResponseWriter, r *http.Request, p page) {
		var out api.RecoveryCodes
		if err := d.call(r, http.MethodPost, "/v1/me/recovery-codes", nil, &out); err != nil {
			d.refused(w, r, p, draw, "/account#mfa", errText(err))
			return
		}
		d.showCodes(w, p, draw, "New recovery codes", out.Codes)
	})
	post("/account/mfa/disable", func(w http.ResponseWriter, r *http.Request, p page) {
		req := api.DisableRequest{Confirm: r.PostFormValue("confirm_word"), Factor: auth.Factor(r.PostFormValue("factor")), Code: strings.TrimSpace(r.PostFormValue("code"))}
		if err := d.callFor(w, r, http.MethodPost, "/v1/me/mfa/disable", req, nil); err != nil {
			d.refused(w, r, p, draw, "/account#mfa", errText(err))
			return
		}
		done(w, r, "/account", "mfa-off")
	})
	post("/account/passkeys/remove", func(w http.ResponseWriter, r *http.Request, p page) {
		if err := d.call(r, http.MethodDelete, "/v1/me/passkeys/"+url.PathEscape(r.PostFormValue("id")), nil, nil); err != nil {
			d.refused(w, r, p, draw, "/account#passkeys", errText(err))
			return
		}
		done(w, r, "/account", "passkey-removed")
	})
	post("/account/tokens", func(w http.ResponseWriter, r *http.Request, p page) {
		req := api.TokenRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Scope: auth.Scope(r.PostFormValue("scope"))}
		if v := r.PostFormValue("expires"); v != "" {
			t, err := time.Parse(time.DateOnly, v)
			if err != nil {
				d.refused(w, r, p, draw, "/account#tokens", fmt.Sprintf("expires %q is not a date: pick one, like 2027-06-30", v))
				return
			}
			req.Expires = &t
		}
		var out api.NewToken
		if err := d.call(r, http.MethodPost, "/v1/me/tokens", req, &out); err != nil {
			d.refused(w, r, p, draw, "/account#tokens", errText(err))
			return
		}
		p.Title, p.Data = "Token "+req.Name, shownData{Token: out.Token}
		draw(w, http.StatusOK, "shown", p)
	})
	post("/account/tokens/revoke", func(w http.ResponseWriter, r *http.Request, p page) {
		if err := d.call(r, http.MethodDelete, "/v1/me/tokens/"+url.PathEscape(r.PostFormValue("id")), nil, nil); err != nil {
			d.refused(w, r, p, draw, "/account#tokens", errText(err))
			return
		}
		done(w, r, "/account", "token-revoked")
	})
	post("/account/sessions/end", func(w http.ResponseWriter, r *http.Request, p page) {
		if err := d.call(r, http.MethodDelete, "/v1/me/sessions", nil, nil); err != nil {
			d.refused(w, r, p, draw, "/account#sessions", errText(err))
			return
		}
		done(w, r, "/account", "signed-out-elsewhere")
	})
}

// showCodes shows recovery codes, once.
func (d *Dashboard) showCodes(w http.ResponseWriter, p page, draw render, title string, codes []string) {
	p.Title, p.Data = title, shownData{Codes: codes}
	draw(w, http.StatusOK, "shown", p)
}

// qrSVG draws text as a QR code in SVG, within the page: the CSP lets no
// data: image in, and a secret must not be in an image's URL.
func qrSVG(text string) (template.HTML, error) {
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("QR code: %w", err)
	}
	n := code.Bounds().Dx()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="-4 -4 %d %d" width="%d" height="%d" role="img" aria-label="QR code of the authenticator secret" id="qr" shape-rendering="crispEdges"><rect x="-4" y="-4" width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n+8, n+8, (n+8)*5, (n+8)*5, n+8, n+8)
	for y := range n {
		for x := range n {
			if r, _, _, _ := code.At(x, y).RGBA(); r == 0 {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()), nil // only numbers and fixed markup
}
