package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"moat/internal/config"
)

// Scope is what an API token may do, within its account's role: read
// everything, change everything but accounts (write), everything
// (admin), or read and change one area only.
type Scope string

// The scopes.
const (
	ScopeRead     Scope = "read"
	ScopeWrite    Scope = "write"
	ScopeAdmin    Scope = "admin"
	ScopeFirewall Scope = "firewall"
	ScopeGuard    Scope = "guard"
	ScopeApps     Scope = "apps"
	ScopeSSH      Scope = "ssh"
	ScopeMail     Scope = "mail"
)

// Scopes lists every scope, for help texts.
var Scopes = []Scope{ScopeRead, ScopeWrite, ScopeAdmin, ScopeFirewall, ScopeGuard, ScopeApps, ScopeSSH, ScopeMail}

// Valid reports whether s is a scope.
func (s Scope) Valid() bool {
	for _, v := range Scopes {
		if s == v {
			return true
		}
	}
	return false
}

// TokenPrefix starts every API token, so that secret scanners know one
// when it leaks into a repository.
const TokenPrefix = "moat_"

// CreateToken makes an API token for an account and returns it, the only
// time it is seen. expires is zero for a token that does not expire.
func (s *Service) CreateToken(ctx context.Context, by Actor, account int64, name string, scope Scope, expires time.Time) (string, Token, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 64 || strings.ContainsFunc(name, unicode.IsControl) {
		return "", Token{}, &config.FieldError{Field: "name", Value: name, Problem: "is not a token name", Fix: "name it for what will use it, up to 64 characters, like backup-script"}
	}
	if !scope.Valid() {
		return "", Token{}, &config.FieldError{Field: "scope", Value: string(scope), Problem: "is not a scope", Fix: "write read, write, admin, or one area: firewall, guard, apps, ssh, mail"}
	}
	now := s.now()
	if !expires.IsZero() && !expires.After(now) {
		return "", Token{}, &config.FieldError{Field: "expires", Value: expires.UTC().Format(time.RFC3339), Problem: "is in the past", Fix: "give a time to come, or none for a token that does not expire"}
	}
	a, err := s.o.Store.Account(ctx, account)
	if err != nil {
		return "", Token{}, err
	}
	tok, hash, err := newSecret(TokenPrefix)
	if err != nil {
		return "", Token{}, err
	}
	_, id, err := newSecret("")
	if err != nil {
		return "", Token{}, err
	}
	t := Token{ID: id[:12], Hash: hash, Account: a.ID, Name: name, Scope: scope, Created: now, Expires: expires}
	if err := s.o.Store.AddToken(ctx, t); err != nil {
		return "", Token{}, err
	}
	detail := "scope " + string(scope)
	if !expires.IsZero() {
		detail += ", expires " + expires.UTC().Format(time.RFC3339)
	}
	s.record(ctx, by, "token.create", a.Email, name+" ("+t.ID+"): "+detail)
	return tok, t, nil
}

// Bearer returns the token of an Authorization: Bearer value and its
// account, recording its use.
func (s *Service) Bearer(ctx context.Context, c Client, tok string) (Token, Account, error) {
	if !strings.HasPrefix(tok, TokenPrefix) {
		return Token{}, Account{}, ErrToken
	}
	t, err := s.o.Store.TokenByHash(ctx, hashSecret(tok))
	if errors.Is(err, ErrNotFound) {
		return t, Account{}, ErrToken
	}
	if err != nil {
		return t, Account{}, err
	}
	now, from := s.now(), addrString(c.Addr)
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return t, Account{}, ErrToken
	}
	a, err := s.o.Store.Account(ctx, t.Account)
	if err != nil {
		return t, a, err
	}
	if now.Sub(t.LastUsed) > touchEvery || t.LastAddr != from {
		first, err := s.o.Store.TouchToken(ctx, t.ID, now, from)
		if err != nil {
			return t, a, err
		}
		if first {
			s.record(ctx, Actor{Who: "token " + t.Name + " of " + a.Email, From: from}, "token.first_use", a.Email, t.Name+" ("+t.ID+")")
		}
		t.LastUsed, t.LastAddr = now, from
	}
	return t, a, nil
}

// Tokens lists an account's tokens.
func (s *Service) Tokens(ctx context.Context, account int64) ([]Token, error) {
	return s.o.Store.Tokens(ctx, account)
}

// RevokeToken ends a token at once.
func (s *Service) RevokeToken(ctx context.Context, by Actor, account int64, id string) error {
	if err := s.o.Store.RemoveToken(ctx, account, id); err != nil {
		if errors.Is(err, ErrNotFound) {
			return &config.FieldError{Field: "id", Value: id, Problem: "is not a token of this account", Fix: "see the list of tokens for their IDs"}
		}
		return err
	}
	s.record(ctx, by, "token.revoke", by.Who, id)
	return nil
}

// String is a token for a list.
func (t Token) String() string {
	exp := "never expires"
	if !t.Expires.IsZero() {
		exp = "expires " + t.Expires.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s %s (%s, %s)", t.ID, t.Name, t.Scope, exp)
}
