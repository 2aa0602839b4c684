package auth

import (
	"context"
	"errors"
	"strings"
	"time"
)

// AppCodeTTL is how long the one-time code that takes a signed-in
// account to a private app is good for: the browser follows it at once.
const AppCodeTTL = time.Minute

// ErrAppCode refuses a one-time code to a private app.
var ErrAppCode = errors.New("this sign-in link to the app was used already, has expired or is for another app: open the app again")

// AppCode gives the account of a full session (token, the admin host's
// cookie) a one-time code that opens a session on a private app's
// domain. The code goes in a URL; a session token never does.
func (s *Service) AppCode(ctx context.Context, token, domain string) (string, error) {
	_, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return "", err
	}
	code, hash, err := newSecret("moatc_")
	if err != nil {
		return "", err
	}
	if err := s.o.Store.AddAppCode(ctx, hash, a.ID, normDomain(domain), s.now().Add(AppCodeTTL)); err != nil {
		return "", err
	}
	return code, nil
}

// OpenApp spends a one-time code on the domain it was made for, and
// returns the token of a new session of that domain.
func (s *Service) OpenApp(ctx context.Context, c Client, code, domain string) (string, AppSession, Account, error) {
	domain = normDomain(domain)
	id, err := s.o.Store.UseAppCode(ctx, hashSecret(strings.TrimSpace(code)), domain, s.now())
	if errors.Is(err, ErrNotFound) {
		s.fail(ctx, c, "", "login.app_failed", "a code to private app "+domain+" that is not valid was used")
		return "", AppSession{}, Account{}, ErrAppCode
	}
	if err != nil {
		return "", AppSession{}, Account{}, err
	}
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return "", AppSession{}, a, err
	}
	tok, hash, err := newSecret("moata_")
	if err != nil {
		return "", AppSession{}, a, err
	}
	now := s.now()
	x := AppSession{Hash: hash, Account: a.ID, Domain: domain, Created: now, LastSeen: now, Addr: addrString(c.Addr), Agent: truncate(c.Agent, 200)}
	if err := s.o.Store.AddAppSession(ctx, x); err != nil {
		return "", x, a, err
	}
	s.record(ctx, Actor{Who: a.Email, From: x.Addr}, "login.app", domain, "signed in to the private app at "+domain)
	return tok, x, a, nil
}

// AppVisitor returns the account of a session of the private app at
// domain: a session of another domain is no session here. Sessions end
// as the admin host's do (auth.session_idle, auth.session_max).
func (s *Service) AppVisitor(ctx context.Context, token, domain string) (AppSession, Account, error) {
	x, err := s.o.Store.AppSession(ctx, hashSecret(token))
	if errors.Is(err, ErrNotFound) || (err == nil && x.Domain != normDomain(domain)) {
		return x, Account{}, ErrSession
	}
	if err != nil {
		return x, Account{}, err
	}
	now, set := s.now(), s.o.Settings()
	if now.Sub(x.LastSeen) > set.Idle() || now.Sub(x.Created) > set.Max() {
		if err := s.o.Store.RemoveAppSession(ctx, x.Hash); err != nil {
			return x, Account{}, err
		}
		return x, Account{}, ErrSession
	}
	if now.Sub(x.LastSeen) > touchEvery {
		if err := s.o.Store.TouchAppSession(ctx, x.Hash, now); err != nil {
			return x, Account{}, err
		}
		x.LastSeen = now
	}
	a, err := s.o.Store.Account(ctx, x.Account)
	if errors.Is(err, ErrNotFound) {
		return x, a, ErrSession
	}
	return x, a, err
}

// CloseApp ends a session of a private app.
func (s *Service) CloseApp(ctx context.Context, token string) error {
	return s.o.Store.RemoveAppSession(ctx, hashSecret(token))
}

func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}
