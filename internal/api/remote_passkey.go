package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"moat/internal/auth"
)

// PasskeyCookie anchors a passwordless sign-in's challenge to the browser
// that asked for it, until the answer comes back.
const PasskeyCookie = "__Host-moat-passkey"

func (rm *Remote) passkeyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/auth/passkey", rm.beginPasswordless)
	mux.HandleFunc("POST /v1/auth/passkey/finish", rm.passwordless)
	mux.HandleFunc("POST /v1/auth/second/passkey", rm.beginPasskeySecond)

	mux.HandleFunc("GET /v1/me/passkeys", rm.withSession(rm.passkeys))
	mux.HandleFunc("POST /v1/me/passkeys", rm.withSession(rm.beginPasskey))
	mux.HandleFunc("POST /v1/me/passkeys/finish", rm.withSession(rm.finishPasskey))
	mux.HandleFunc("DELETE /v1/me/passkeys/{id}", rm.withSession(rm.removePasskey))
}

// PasskeyInfo is a passkey as listed: never more than its public parts.
type PasskeyInfo struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// LastUsed is absent for a passkey never signed in with.
	LastUsed *time.Time `json:"last_used,omitempty"`
	// AAGUID names the authenticator's model (all zeros when it keeps
	// that to itself).
	AAGUID     string   `json:"aaguid"`
	Transports []string `json:"transports,omitempty"`
	// BackedUp is true for a passkey synced by its platform (a password
	// manager, iCloud Keychain): it survives the loss of one device.
	BackedUp bool `json:"backed_up"`
	// CloneWarning is true for a passkey refused because its signature
	// counter went backwards.
	CloneWarning bool `json:"clone_warning,omitempty"`
}

func passkeyInfo(p auth.Passkey) PasskeyInfo {
	out := PasskeyInfo{ID: auth.PasskeyID(p.ID), Name: p.Name, Created: p.Created, Transports: p.Transports,
		BackedUp: p.BackedUp(), CloneWarning: p.CloneWarning, AAGUID: uuid.Nil.String()}
	if id, err := uuid.FromBytes(p.AAGUID); err == nil {
		out.AAGUID = id.String()
	}
	if !p.LastUsed.IsZero() {
		out.LastUsed = &p.LastUsed
	}
	return out
}

// readAnswer reads a raw WebAuthn answer: a PublicKeyCredential as JSON.
func readAnswer(r *http.Request) (json.RawMessage, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return nil, inputError{err}
	}
	if !json.Valid(b) {
		return nil, inputError{errors.New("request body: not JSON: send the PublicKeyCredential that navigator.credentials.get() gave, as JSON")}
	}
	return b, nil
}

func (rm *Remote) beginPasswordless(w http.ResponseWriter, r *http.Request) {
	assertion, tok, err := rm.Auth.BeginPasswordless(r.Context(), rm.client(r))
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: PasskeyCookie, Value: tok, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: int(auth.CeremonyTTL / time.Second)})
	writeJSON(w, http.StatusOK, assertion)
}

func (rm *Remote) passwordless(w http.ResponseWriter, r *http.Request) {
	answer, err := readAnswer(r)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	c, err := r.Cookie(PasskeyCookie)
	if err != nil || c.Value == "" {
		rm.API.fail(w, unauthorized(errors.New("no passkey sign-in is on its way: ask for a challenge first (POST /v1/auth/passkey)")))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: PasskeyCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	in, err := rm.Auth.Passwordless(r.Context(), rm.client(r), c.Value, answer)
	if err != nil {
		rm.API.fail(w, passkeyErr(w, err))
		return
	}
	rm.signedIn(w, in)
}

// passkeyErr gives a passkey refusal its status: 401 like a wrong code.
func passkeyErr(w http.ResponseWriter, err error) error {
	if errors.Is(err, auth.ErrPasskey) || errors.Is(err, auth.ErrCeremony) {
		return unauthorized(err)
	}
	return authErr(w, err)
}

func (rm *Remote) beginPasskeySecond(w http.ResponseWriter, r *http.Request) {
	tok, err := pendingCookie(r)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	assertion, err := rm.Auth.BeginPasskeySecond(r.Context(), rm.client(r), tok)
	if err != nil {
		rm.API.fail(w, authErr(w, err))
		return
	}
	writeJSON(w, http.StatusOK, assertion)
}

func (rm *Remote) passkeys(w http.ResponseWriter, r *http.Request, p principal) {
	list, err := rm.Auth.Passkeys(r.Context(), p.account.ID)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	out := []PasskeyInfo{}
	for _, k := range list {
		out = append(out, passkeyInfo(k))
	}
	page(rm.API, w, r, out)
}

func (rm *Remote) beginPasskey(w http.ResponseWriter, r *http.Request, p principal) {
	creation, err := rm.Auth.BeginPasskey(r.Context(), p.raw)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, creation)
}

// PasskeyRequest adds a passkey: its name and the PublicKeyCredential
// navigator.credentials.create() gave.
type PasskeyRequest struct {
	Name       string          `json:"name"`
	Credential json.RawMessage `json:"credential"`
}

// NewPasskey is a passkey just added, with the session's new CSRF token:
// the session is made again, as after every change of second factor.
type NewPasskey struct {
	Passkey PasskeyInfo `json:"passkey"`
	CSRF    string      `json:"csrf"`
}

func (rm *Remote) finishPasskey(w http.ResponseWriter, r *http.Request, p principal) {
	var req PasskeyRequest
	if err := decode(r, &req); err != nil {
		rm.API.fail(w, err)
		return
	}
	if len(req.Credential) == 0 {
		rm.API.fail(w, inputError{errors.New("credential is missing: send the PublicKeyCredential that navigator.credentials.create() gave")})
		return
	}
	k, err := rm.Auth.FinishPasskey(r.Context(), ctxActor(r.Context()), p.raw, req.Name, req.Credential)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	in, err := rm.Auth.Rotate(r.Context(), rm.client(r), p.raw)
	if err != nil {
		rm.API.fail(w, err)
		return
	}
	SetSessionCookie(w, in.Token)
	writeJSON(w, http.StatusCreated, NewPasskey{Passkey: passkeyInfo(k), CSRF: in.Session.CSRF})
}

func (rm *Remote) removePasskey(w http.ResponseWriter, r *http.Request, p principal) {
	if err := rm.Auth.RemovePasskey(r.Context(), ctxActor(r.Context()), p.account.ID, r.PathValue("id")); err != nil {
		rm.API.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": r.PathValue("id")})
}
