package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"moat/internal/auth"
	"moat/internal/config"
)

func (rm *Remote) authRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/auth/signin", rm.signIn)
	mux.HandleFunc("POST /v1/auth/second", rm.second)
	mux.HandleFunc("POST /v1/auth/code", rm.resendCode)
	mux.HandleFunc("POST /v1/auth/invitation", rm.accept)
	mux.HandleFunc("POST /v1/auth/signout", rm.withSession(rm.signOut))

	mux.HandleFunc("GET /v1/me", rm.withSession(rm.me))
	mux.HandleFunc("PUT /v1/me/password", rm.withSession(rm.changePassword))
	mux.HandleFunc("GET /v1/me/sessions", rm.withSession(rm.sessions))
	mux.HandleFunc("DELETE /v1/me/sessions", rm.withSession(rm.signOutEverywhere))
	mux.HandleFunc("POST /v1/me/code", rm.withSession(rm.requestCode))
	mux.HandleFunc("POST /v1/me/totp", rm.withSession(rm.beginTOTP))
	mux.HandleFunc("POST /v1/me/totp/confirm", rm.withSession(rm.confirmTOTP))
	mux.HandleFunc("POST /v1/me/recovery-codes", rm.withSession(rm.recoveryCodes))
	mux.HandleFunc("POST /v1/me/mfa/disable", rm.withSession(rm.disableMFA))
	mux.HandleFunc("GET /v1/me/tokens", rm.withSession(rm.tokens))
	mux.HandleFunc("POST /v1/me/tokens", rm.withSession(rm.createToken))
	mux.HandleFunc("DELETE /v1/me/tokens/{id}", rm.withSession(rm.revokeToken))
}

// SignInRequest is the first step of a sign-in.
type SignInRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// SignInResponse says how far a sign-in is: "password" with the factors
// that can finish it, or "full" with the account and its CSRF token.
type SignInResponse struct {
	Stage   auth.Stage    `json:"stage"`
	Needs   []auth.Factor `json:"needs,omitempty"`
	Account *Account      `json:"account,omitempty"`
	CSRF    string        `json:"csrf,omitempty"`
}

// Account is an account as the API shows it: never a hash or a secret.
type Account struct {
	Email   string      `json:"email"`
	Name    string      `json:"name,omitempty"`
	Role    auth.Role   `json:"role"`
	MFA     auth.Method `json:"mfa"`
	Created time.Time   `json:"created"`
	// Invited is true for an account whose invitation has not been
	// taken up.
	Invited bool `json:"invited,omitempty"`
}

func accountOf(a auth.Account) Account {
	return Account{Email: a.Email, Name: a.Name, Role: a.Role, MFA: a.MFA, Created: a.Created, Invited: a.Hash == ""}
}

func (rm *Remote) signedIn(w http.ResponseWriter, in auth.SignedIn) {
	SetSessionCookie(w, in.Token)
	out := SignInResponse{Stage: in.Session.Stage, Needs: in.Needs}
	if in.Session.Stage == auth.StageFull {
		a := accountOf(in.Account)
		out.Account, out.CSRF = &a, in.Session.CSRF
	}
	writeJSON(w, http.StatusOK, out)
}

func (rm *Remote) signIn(w http.ResponseWriter, r *http.Request) {
	var req SignInRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	in, err := rm.Auth.SignIn(r.Context(), rm.client(r), req.Email, req.Password)
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	rm.signedIn(w, in)
}

// SecondRequest finishes a sign-in: factor is email, totp or recovery
// with its code, or passkey with the PublicKeyCredential that
// navigator.credentials.get() gave for the challenge of
// POST /v1/auth/second/passkey.
type SecondRequest struct {
	Factor     auth.Factor     `json:"factor"`
	Code       string          `json:"code,omitempty"`
	Credential json.RawMessage `json:"credential,omitempty"`
}

func pendingCookie(r *http.Request) (string, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return "", unauthorized(errors.New("no sign-in is on its way: send the email and password first (POST /v1/auth/signin)"))
	}
	return c.Value, nil
}

func (rm *Remote) second(w http.ResponseWriter, r *http.Request) {
	var req SecondRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	tok, err := pendingCookie(r)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	code := req.Code
	if req.Factor == auth.FactorPasskey {
		code = string(req.Credential)
	}
	in, err := rm.Auth.Second(r.Context(), rm.client(r), tok, req.Factor, code)
	if err != nil {
		rm.API.fail(w, passkeyErr(w, err))
		return
	}
	rm.signedIn(w, in)
}

func (rm *Remote) resendCode(w http.ResponseWriter, r *http.Request) {
	tok, err := pendingCookie(r)
	if err == nil {
		err = rm.Auth.ResendCode(r.Context(), rm.client(r), tok)
	}
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"sent": "a new code is on its way"})
}

// InvitationRequest takes up an invitation with the account's password.
type InvitationRequest struct {
	Invitation string `json:"invitation"`
	Password   string `json:"password"`
}

func (rm *Remote) accept(w http.ResponseWriter, r *http.Request) {
	var req InvitationRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	a, err := rm.Auth.Accept(r.Context(), rm.client(r), req.Invitation, req.Password)
	if err != nil {
		if len(fieldErrors(err)) == 0 {
			err = unauthorized(err)
		}
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, accountOf(a))
}

func (rm *Remote) signOut(w http.ResponseWriter, r *http.Request, p principal) {
	if err := rm.Auth.SignOut(r.Context(), p.raw); err != nil {
		rm.API.fail(w, err)
		return
	}
	ClearSessionCookie(w)
	writeJSON(w, http.StatusOK, map[string]string{"signed_out": p.account.Email})
}

// Me is the signed-in account, with the CSRF token its changes carry.
type Me struct {
	Account
	CSRF string `json:"csrf"`
	// RecoveryCodes is how many recovery codes are left.
	RecoveryCodes int `json:"recovery_codes"`
}

func (rm *Remote) me(w http.ResponseWriter, r *http.Request, p principal) {
	n, err := rm.Auth.RecoveryCodesLeft(r.Context(), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Me{Account: accountOf(p.account), CSRF: p.session.CSRF, RecoveryCodes: n})
}

// PasswordRequest changes the signed-in account's password.
type PasswordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

func (rm *Remote) changePassword(w http.ResponseWriter, r *http.Request, p principal) {
	var req PasswordRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	in, err := rm.Auth.ChangePassword(r.Context(), rm.client(r), p.raw, req.Current, req.New)
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	rm.signedIn(w, in)
}

// SessionInfo is one session in the list.
type SessionInfo struct {
	Current  bool      `json:"current"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
	Addr     string    `json:"addr"`
	Agent    string    `json:"agent"`
}

func (rm *Remote) sessions(w http.ResponseWriter, r *http.Request, p principal) {
	list, err := rm.Auth.Sessions(r.Context(), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	out := []SessionInfo{}
	for _, x := range list {
		if x.Stage != auth.StageFull {
			continue
		}
		out = append(out, SessionInfo{Current: x.Hash == p.session.Hash, Created: x.Created, LastSeen: x.LastSeen, Addr: x.Addr, Agent: x.Agent})
	}
	page(rm.API, w, r, out)
}

func (rm *Remote) signOutEverywhere(w http.ResponseWriter, r *http.Request, p principal) {
	n, err := rm.Auth.SignOutEverywhere(r.Context(), ctxActor(r.Context()), p.account.ID, p.raw)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"ended": n})
}

func (rm *Remote) requestCode(w http.ResponseWriter, r *http.Request, p principal) {
	if err := rm.Auth.RequestCode(r.Context(), rm.client(r), p.raw); err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"sent": "a code is on its way to " + p.account.Email})
}

// TOTPEnrolment is a new authenticator secret: the QR code is a PNG,
// drawn by moat.
type TOTPEnrolment struct {
	Secret string `json:"secret"`
	URL    string `json:"url"`
	QR     []byte `json:"qr_png"`
}

func (rm *Remote) beginTOTP(w http.ResponseWriter, r *http.Request, p principal) {
	en, err := rm.Auth.BeginTOTP(r.Context(), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TOTPEnrolment{Secret: en.Secret, URL: en.URL, QR: en.QR})
}

// CodeRequest carries one code.
type CodeRequest struct {
	Code string `json:"code"`
}

// RecoveryCodes are shown once.
type RecoveryCodes struct {
	Codes []string `json:"recovery_codes,omitempty"`
	CSRF  string   `json:"csrf,omitempty"`
}

func (rm *Remote) confirmTOTP(w http.ResponseWriter, r *http.Request, p principal) {
	var req CodeRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	codes, err := rm.Auth.ConfirmTOTP(r.Context(), ctxActor(r.Context()), p.account.ID, req.Code)
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	rm.rotated(w, r, p, RecoveryCodes{Codes: codes})
}

// rotated gives the session a new id after a change of its second
// factor, and answers out with the new CSRF token.
func (rm *Remote) rotated(w http.ResponseWriter, r *http.Request, p principal, out RecoveryCodes) {
	in, err := rm.Auth.Rotate(r.Context(), rm.client(r), p.raw)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	SetSessionCookie(w, in.Token)
	out.CSRF = in.Session.CSRF
	writeJSON(w, http.StatusOK, out)
}

func (rm *Remote) recoveryCodes(w http.ResponseWriter, r *http.Request, p principal) {
	codes, err := rm.Auth.NewRecoveryCodes(r.Context(), ctxActor(r.Context()), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, RecoveryCodes{Codes: codes})
}

// DisableRequest turns the second factor off: confirm must be the word
// disable, and factor and code a fresh second factor.
type DisableRequest struct {
	Confirm string      `json:"confirm"`
	Factor  auth.Factor `json:"factor"`
	Code    string      `json:"code"`
}

func (rm *Remote) disableMFA(w http.ResponseWriter, r *http.Request, p principal) {
	var req DisableRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	if strings.TrimSpace(req.Confirm) != "disable" {
		rm.API.fail(w, &config.FieldError{Field: "confirm", Value: req.Confirm, Problem: "is not the word disable", Fix: "type disable to turn the second factor off"})
		return
	}
	if err := rm.Auth.DisableMFA(r.Context(), rm.client(r), ctxActor(r.Context()), p.raw, req.Confirm, req.Factor, req.Code); err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	rm.rotated(w, r, p, RecoveryCodes{})
}

// TokenInfo is an API token as listed: never the token itself.
type TokenInfo struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Scope    auth.Scope `json:"scope"`
	Created  time.Time  `json:"created"`
	Expires  *time.Time `json:"expires,omitempty"`
	LastUsed *time.Time `json:"last_used,omitempty"`
	LastAddr string     `json:"last_addr,omitempty"`
}

func tokenInfo(t auth.Token) TokenInfo {
	out := TokenInfo{ID: t.ID, Name: t.Name, Scope: t.Scope, Created: t.Created, LastAddr: t.LastAddr}
	if !t.Expires.IsZero() {
		out.Expires = &t.Expires
	}
	if !t.LastUsed.IsZero() {
		out.LastUsed = &t.LastUsed
	}
	return out
}

func (rm *Remote) tokens(w http.ResponseWriter, r *http.Request, p principal) {
	list, err := rm.Auth.Tokens(r.Context(), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	out := []TokenInfo{}
	for _, t := range list {
		out = append(out, tokenInfo(t))
	}
	page(rm.API, w, r, out)
}

// TokenRequest makes an API token; Expires is optional.
type TokenRequest struct {
	Name    string     `json:"name"`
	Scope   auth.Scope `json:"scope"`
	Expires *time.Time `json:"expires,omitempty"`
}

// NewToken is a token just made: Token is shown this once.
type NewToken struct {
	TokenInfo
	Token string `json:"token"`
}

func (rm *Remote) createToken(w http.ResponseWriter, r *http.Request, p principal) {
	var req TokenRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	var exp time.Time
	if req.Expires != nil {
		exp = *req.Expires
	}
	tok, t, err := rm.Auth.CreateToken(r.Context(), ctxActor(r.Context()), p.account.ID, req.Name, req.Scope, exp)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, NewToken{TokenInfo: tokenInfo(t), Token: tok})
}

func (rm *Remote) revokeToken(w http.ResponseWriter, r *http.Request, p principal) {
	if err := rm.Auth.RevokeToken(r.Context(), ctxActor(r.Context()), p.account.ID, r.PathValue("id")); err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": r.PathValue("id")})
}

// asConflict marks a refusal about the accounts as they are (the last
// admin) as 409, and leaves input errors as they are.
func asConflict(err error) error {
	if errors.Is(err, auth.ErrLastAdmin) {
		return &statusError{http.StatusConflict, err}
	}
	return err
}
