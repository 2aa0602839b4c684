package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

const (
	// ResetTTL is how long a password reset link is good for.
	ResetTTL = 30 * time.Minute
	// ResetEvery is how often an account is mailed a reset link at
	// most: a stranger who knows the address cannot flood its inbox.
	ResetEvery = time.Minute
)

// ErrResetLink refuses a password reset link that cannot be used.
var ErrResetLink = errors.New("the reset link is not valid: it was used already, has expired (it works for 30 minutes) or was never sent; ask for a new one")

// resets remembers when each account was last mailed a link.
type resets struct {
	mu   sync.Mutex
	sent map[int64]time.Time
}

// due reports whether account may be mailed a link now, and notes it.
func (r *resets) due(account int64, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent == nil {
		r.sent = map[int64]time.Time{}
	}
	if last, ok := r.sent[account]; ok && now.Sub(last) < ResetEvery {
		return false
	}
	if len(r.sent) > 10000 {
		for id, t := range r.sent {
			if now.Sub(t) >= ResetEvery {
				delete(r.sent, id)
			}
		}
	}
	r.sent[account] = now
	return true
}

// RequestPasswordReset mails the account of email a link that sets a
// new password: link turns the link's secret into its URL. The answer is
// the same whether or not the account exists, so that the page tells a
// stranger nothing; only a request too soon after another is refused.
// The link works once, for ResetTTL; a new one replaces it.
func (s *Service) RequestPasswordReset(ctx context.Context, c Client, email string, link func(secret string) string) error {
	if err := s.regulate(c, ""); err != nil {
		return err
	}
	from := Actor{Who: normEmail(email), From: addrString(c.Addr)}
	a, err := s.o.Store.AccountByEmail(ctx, normEmail(email))
	if errors.Is(err, ErrNotFound) {
		s.record(ctx, from, "account.reset_unknown", normEmail(email), "a password reset was asked for an address that has no account")
		return nil
	}
	if err != nil {
		return err
	}
	if !s.resets.due(a.ID, s.now()) {
		return nil // the link mailed a moment ago is still good
	}
	tok, hash, err := newSecret("moatr_")
	if err != nil {
		return err
	}
	if err := s.o.Store.AddPasswordReset(ctx, hash, a.ID, s.now().Add(ResetTTL)); err != nil {
		return err
	}
	s.record(ctx, from, "account.reset_requested", a.Email, "a password reset link was mailed")
	s.mail(ctx, a.Email, "Set a new moat password", fmt.Sprintf(
		"Someone at %s asked to set a new password for %s. If it was you, open this link within 30 minutes (it works once):\n\n%s\n\n"+
			"Your second step (the mailed code or the authenticator app) is still asked for when you sign in.\n\n"+
			"If it was not you, ignore this mail: your password stays as it is.\n",
		addrString(c.Addr), a.Email, link(tok)))
	return nil
}

// ResetPassword spends a reset link and sets the account's password;
// every session of the account ends. A password the policy refuses
// does not spend the link.
func (s *Service) ResetPassword(ctx context.Context, c Client, secret, password string) (Account, error) {
	if err := s.regulate(c, ""); err != nil {
		return Account{}, err
	}
	secret = strings.TrimSpace(secret)
	hash := hashSecret(secret)
	id, err := s.o.Store.UsePasswordReset(ctx, hash, s.now())
	if errors.Is(err, ErrNotFound) {
		s.fail(ctx, c, "", "account.reset_failed", "a password reset link that is not valid was used")
		return Account{}, ErrResetLink
	}
	if err != nil {
		return Account{}, err
	}
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return a, err
	}
	if err := s.SetPassword(ctx, Actor{Who: a.Email + " (reset link)", From: addrString(c.Addr)}, a.ID, password); err != nil {
		if perr := s.o.Store.AddPasswordReset(ctx, hash, a.ID, s.now().Add(ResetTTL)); perr != nil {
			s.o.Logger.Error("auth: could not put back a password reset", "account", a.Email)
		}
		return a, err
	}
	return a, nil
}
