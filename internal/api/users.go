package api

import (
	"context"
	"errors"
	"net/http"

	"moat/internal/auth"
)

// The accounts: listed, added and changed by an admin over HTTPS (the
// Remote checks who), or by root on the box through the control socket.
// Setting another account's password and taking its second factor off
// are the recovery path, for root on the box only.
func (s *Server) userRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/users", s.withAccounts(s.users))
	mux.HandleFunc("POST /v1/users", s.withAccounts(s.addUser))
	mux.HandleFunc("PATCH /v1/users/{email}", s.withAccounts(s.patchUser))
	mux.HandleFunc("DELETE /v1/users/{email}", s.withAccounts(s.removeUser))
	mux.HandleFunc("PUT /v1/users/{email}/password", s.withAccounts(s.onTheBox(s.setPassword)))
	mux.HandleFunc("POST /v1/users/{email}/reset-mfa", s.withAccounts(s.onTheBox(s.resetMFA)))
}

type boxKey struct{}

// OnTheBox marks a request context as coming from root on the server
// itself: the control socket, or the CLI with the store in hand.
func OnTheBox(ctx context.Context) context.Context { return context.WithValue(ctx, boxKey{}, true) }

// onTheBox reports whether ctx is marked by OnTheBox.
func onTheBox(ctx context.Context) bool {
	on, _ := ctx.Value(boxKey{}).(bool)
	return on
}

func (s *Server) withAccounts(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Auth == nil {
			s.fail(w, &statusError{http.StatusServiceUnavailable, errors.New("the accounts are not open here: run moat serve, or the command as root on the server")})
			return
		}
		h(w, r)
	}
}

func (s *Server) onTheBox(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !onTheBox(r.Context()) {
			s.fail(w, forbidden(errors.New("this is the recovery path, for root on the server only: run moat user passwd or moat user reset-mfa there")))
			return
		}
		h(w, r)
	}
}

func (s *Server) users(w http.ResponseWriter, r *http.Request) {
	list, err := s.Auth.Accounts(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []Account{}
	for _, a := range list {
		out = append(out, accountOf(a))
	}
	page(s, w, r, out)
}

// UserRequest adds an account. Without a password, the answer carries a
// one-time invitation for the person to set it.
type UserRequest struct {
	Email    string    `json:"email"`
	Name     string    `json:"name,omitempty"`
	Role     auth.Role `json:"role"`
	Password string    `json:"password,omitempty"`
}

// NewUser is an account just added, with its invitation when it has no
// password yet (shown once, good for 24 hours).
type NewUser struct {
	Account
	Invitation string `json:"invitation,omitempty"`
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Role == "" {
		req.Role = auth.RoleViewer
	}
	by := ctxActor(r.Context())
	var (
		a   auth.Account
		inv string
		err error
	)
	if req.Password == "" {
		a, inv, err = s.Auth.Invite(r.Context(), by, req.Email, req.Name, req.Role)
	} else {
		a, err = s.Auth.AddAccount(r.Context(), by, req.Email, req.Name, req.Role, req.Password)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, NewUser{Account: accountOf(a), Invitation: inv})
}

// UserPatch changes an account's role.
type UserPatch struct {
	Role auth.Role `json:"role"`
}

func (s *Server) user(w http.ResponseWriter, r *http.Request) (auth.Account, bool) {
	a, err := s.Auth.Account(r.Context(), r.PathValue("email"))
	if err != nil {
		s.fail(w, notFound(err.Error()))
		return a, false
	}
	return a, true
}

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request) {
	var req UserPatch
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	a, ok := s.user(w, r)
	if !ok {
		return
	}
	if err := s.Auth.SetRole(r.Context(), ctxActor(r.Context()), a.ID, req.Role); err != nil {
		s.fail(w, asConflict(err))
		return
	}
	a.Role = req.Role
	writeJSON(w, http.StatusOK, accountOf(a))
}

func (s *Server) removeUser(w http.ResponseWriter, r *http.Request) {
	a, ok := s.user(w, r)
	if !ok {
		return
	}
	if err := s.Auth.RemoveAccount(r.Context(), ctxActor(r.Context()), a.ID); err != nil {
		s.fail(w, asConflict(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": a.Email})
}

// PasswordSet is a new password for an account, set by root.
type PasswordSet struct {
	Password string `json:"password"`
}

func (s *Server) setPassword(w http.ResponseWriter, r *http.Request) {
	var req PasswordSet
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	a, ok := s.user(w, r)
	if !ok {
		return
	}
	if err := s.Auth.SetPassword(r.Context(), ctxActor(r.Context()), a.ID, req.Password); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, accountOf(a))
}

func (s *Server) resetMFA(w http.ResponseWriter, r *http.Request) {
	a, ok := s.user(w, r)
	if !ok {
		return
	}
	if err := s.Auth.ResetMFA(r.Context(), ctxActor(r.Context()), a.ID); err != nil {
		s.fail(w, err)
		return
	}
	a, err := s.Auth.Account(r.Context(), a.Email)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, accountOf(a))
}
