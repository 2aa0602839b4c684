package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"moat/internal/secret"
)

// Factor is a second factor presented to finish a sign-in (or to prove a
// person is still there before a change of MFA).
type Factor string

// The factors.
const (
	FactorEmail    Factor = "email"
	FactorTOTP     Factor = "totp"
	FactorRecovery Factor = "recovery"
)

// SignedIn is a session just made: the token goes in the cookie and is
// not kept anywhere else.
type SignedIn struct {
	Token   string
	Session Session
	Account Account
	// Needs lists the factors that can finish a StagePassword sign-in;
	// empty when the session is StageFull.
	Needs []Factor
}

// SignIn checks an email and password. The session it returns is
// StagePassword (finish it with Second), or StageFull for an account
// whose second factor is off. For an account whose factor is the email
// code, the code is sent.
func (s *Service) SignIn(ctx context.Context, c Client, email, password string) (SignedIn, error) {
	if err := s.regulate(c, email); err != nil {
		return SignedIn{}, err
	}
	a, err := s.o.Store.AccountByEmail(ctx, normEmail(email))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return SignedIn{}, err
	}
	if !s.verify(a.Hash, password) { // a.Hash is empty for no account: the dummy is checked
		s.fail(ctx, c, email, "login.failed", "wrong password or no such account")
		return SignedIn{}, ErrSignIn
	}
	if p, err := secret.ParamsOf(a.Hash); err == nil && p.Below(s.params) {
		if h, err := s.params.Hash(password); err == nil && s.o.Store.SetPassword(ctx, a.ID, h) == nil {
			s.record(ctx, Actor{Who: a.Email, From: addrString(c.Addr)}, "account.rehash", a.Email,
				fmt.Sprintf("password hash made again with argon2id m=%d,t=%d,p=%d (was m=%d,t=%d,p=%d)", s.params.Memory, s.params.Time, s.params.Threads, p.Memory, p.Time, p.Threads))
		}
	}
	if a.MFA == MethodOff {
		return s.finish(ctx, c, a, "", "password only")
	}
	in, err := s.newSession(ctx, c, a, StagePassword)
	if err != nil {
		return in, err
	}
	in.Needs = []Factor{FactorRecovery}
	if keys, err := s.o.Store.Passkeys(ctx, a.ID); err != nil {
		return in, err
	} else if len(keys) > 0 {
		in.Needs = []Factor{FactorPasskey, FactorRecovery}
	}
	switch a.MFA {
	case MethodEmail:
		in.Needs = append([]Factor{FactorEmail}, in.Needs...)
		if err := s.sendCode(ctx, c, in.Session, a); err != nil {
			return in, err
		}
	case MethodTOTP:
		in.Needs = append([]Factor{FactorTOTP}, in.Needs...)
	}
	return in, nil
}

// Second finishes a StagePassword sign-in with a second factor. The
// password's session ends and a new one takes its place, so that a
// session id known before the sign-in is worth nothing after it.
func (s *Service) Second(ctx context.Context, c Client, token string, f Factor, code string) (SignedIn, error) {
	sess, a, err := s.pending(ctx, token)
	if err != nil {
		return SignedIn{}, err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return SignedIn{}, err
	}
	if err := s.checkFactor(ctx, sess, a, f, code); err != nil {
		s.fail(ctx, c, a.Email, "login.mfa_failed", string(f)+": "+err.Error())
		return SignedIn{}, err
	}
	return s.finish(ctx, c, a, sess.Hash, string(f))
}

// ResendCode sends a new email code for a StagePassword session; the
// tries start again.
func (s *Service) ResendCode(ctx context.Context, c Client, token string) error {
	sess, a, err := s.pending(ctx, token)
	if err != nil {
		return err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return err
	}
	if a.MFA != MethodEmail {
		return refuse("%s signs in with %s, not an email code", a.Email, a.MFA)
	}
	return s.sendCode(ctx, c, sess, a)
}

// pending returns a StagePassword session that has not waited too long.
func (s *Service) pending(ctx context.Context, token string) (Session, Account, error) {
	sess, err := s.o.Store.Session(ctx, hashSecret(token))
	if errors.Is(err, ErrNotFound) || err == nil && (sess.Stage != StagePassword || s.now().Sub(sess.Created) > PendingTTL) {
		return sess, Account{}, ErrSession
	}
	if err != nil {
		return sess, Account{}, err
	}
	a, err := s.o.Store.Account(ctx, sess.Account)
	return sess, a, err
}

// finish makes the StageFull session of a sign-in, replacing the
// StagePassword one (old), and tells the account of a sign-in from an
// address it has not used for NewAddressAfter.
func (s *Service) finish(ctx context.Context, c Client, a Account, old, how string) (SignedIn, error) {
	if old != "" {
		if err := s.o.Store.RemoveSession(ctx, old); err != nil {
			return SignedIn{}, err
		}
	}
	in, err := s.newSession(ctx, c, a, StageFull)
	if err != nil {
		return in, err
	}
	s.backoff.reset(normEmail(a.Email))
	from := addrString(c.Addr)
	s.record(ctx, Actor{Who: a.Email, From: from}, "login.ok", a.Email, how)
	last, err := s.o.Store.SeeAddress(ctx, a.ID, from, s.now())
	if err != nil {
		s.o.Logger.Error("auth: remember the sign-in address", "err", err)
	} else if last.IsZero() || s.now().Sub(last) > NewAddressAfter {
		s.mail(ctx, a.Email, "New sign-in to moat from "+from,
			fmt.Sprintf("%s signed in to moat from %s, an address not seen for this account in the last 30 days.\n\nBrowser: %s\nTime: %s\n\nIf this was not you, change your password and sign out everywhere from the Account page.\n",
				a.Email, from, c.Agent, s.now().UTC().Format(time.RFC1123)))
	}
	return in, nil
}

func (s *Service) newSession(ctx context.Context, c Client, a Account, st Stage) (SignedIn, error) {
	tok, hash, err := newSecret("")
	if err != nil {
		return SignedIn{}, err
	}
	csrf, _, err := newSecret("")
	if err != nil {
		return SignedIn{}, err
	}
	now := s.now()
	sess := Session{Hash: hash, Account: a.ID, Stage: st, CSRF: csrf, Created: now, LastSeen: now, Addr: addrString(c.Addr), Agent: truncate(c.Agent, 200)}
	if err := s.o.Store.AddSession(ctx, sess); err != nil {
		return SignedIn{}, err
	}
	return SignedIn{Token: tok, Session: sess, Account: a}, nil
}

// Authenticate returns the StageFull session of a cookie's token and its
// account. A session idle for longer than auth.session_idle, or older
// than auth.session_max, has ended.
func (s *Service) Authenticate(ctx context.Context, token string) (Session, Account, error) {
	sess, err := s.o.Store.Session(ctx, hashSecret(token))
	if errors.Is(err, ErrNotFound) {
		return sess, Account{}, ErrSession
	}
	if err != nil {
		return sess, Account{}, err
	}
	now, set := s.now(), s.o.Settings()
	if sess.Stage != StageFull {
		return sess, Account{}, ErrSession
	}
	if now.Sub(sess.LastSeen) > set.Idle() || now.Sub(sess.Created) > set.Max() {
		if err := s.o.Store.RemoveSession(ctx, sess.Hash); err != nil {
			return sess, Account{}, err
		}
		return sess, Account{}, ErrSession
	}
	if now.Sub(sess.LastSeen) > touchEvery {
		if err := s.o.Store.TouchSession(ctx, sess.Hash, now); err != nil {
			return sess, Account{}, err
		}
		sess.LastSeen = now
	}
	a, err := s.o.Store.Account(ctx, sess.Account)
	if errors.Is(err, ErrNotFound) {
		return sess, a, ErrSession
	}
	return sess, a, err
}

// Rotate replaces a session with a new one of the same account, for a
// change of privilege (a new password, a new second factor) that the
// person making it should survive.
func (s *Service) Rotate(ctx context.Context, c Client, token string) (SignedIn, error) {
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return SignedIn{}, err
	}
	if err := s.o.Store.RemoveSession(ctx, sess.Hash); err != nil {
		return SignedIn{}, err
	}
	return s.newSession(ctx, c, a, StageFull)
}

// SignOut ends one session.
func (s *Service) SignOut(ctx context.Context, token string) error {
	return s.o.Store.RemoveSession(ctx, hashSecret(token))
}

// SignOutEverywhere ends every session of an account but the one of keep
// (a token, or empty for all), and reports how many ended.
func (s *Service) SignOutEverywhere(ctx context.Context, by Actor, account int64, keep string) (int, error) {
	k := ""
	if keep != "" {
		k = hashSecret(keep)
	}
	n, err := s.o.Store.RemoveSessions(ctx, account, k)
	if err == nil {
		s.record(ctx, by, "login.sign_out_everywhere", by.Who, fmt.Sprintf("%d sessions ended", n))
	}
	return n, err
}

// Sessions lists an account's sessions.
func (s *Service) Sessions(ctx context.Context, account int64) ([]Session, error) {
	return s.o.Store.Sessions(ctx, account)
}

// backoff slows the sign-ins of one account after failures, whatever the
// address: the 4th failure in a row costs a second's wait, each next one
// twice as long, up to 15 minutes; a sign-in resets it. It is keyed by the
// email typed, so an address without an account backs off the same way.
type backoff struct {
	mu sync.Mutex
	m  map[string]*strike
}

type strike struct {
	failures int
	until    time.Time
	last     time.Time
}

const (
	backoffFree = 3
	backoffMax  = 15 * time.Minute
	backoffKeys = 10000
)

func (b *backoff) wait(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.m[key]; st != nil && now.Before(st.until) {
		return st.until.Sub(now)
	}
	return 0
}

func (b *backoff) fail(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]*strike)
	}
	st := b.m[key]
	if st == nil {
		if len(b.m) >= backoffKeys {
			for k, v := range b.m {
				if now.Sub(v.last) > backoffMax {
					delete(b.m, k)
				}
			}
			for k := range b.m { // still full: forget one at random
				if len(b.m) < backoffKeys {
					break
				}
				delete(b.m, k)
			}
		}
		st = &strike{}
		b.m[key] = st
	}
	st.failures++
	st.last = now
	if n := st.failures - backoffFree; n > 0 {
		d := backoffMax
		if n < 11 {
			d = min(time.Second<<(n-1), backoffMax)
		}
		st.until = now.Add(d)
	}
}

func (b *backoff) reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ChangePassword is a signed-in person changing their own password: the
// current one is checked first, every session ends, and a new one
// replaces the session it came from.
func (s *Service) ChangePassword(ctx context.Context, c Client, token, current, next string) (SignedIn, error) {
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return SignedIn{}, err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return SignedIn{}, err
	}
	if !s.verify(a.Hash, current) {
		s.fail(ctx, c, a.Email, "account.password_failed", "wrong current password")
		return SignedIn{}, fmt.Errorf("the current password is wrong: %w", ErrSignIn)
	}
	by := Actor{Who: a.Email, From: sess.Addr}
	if err := s.SetPassword(ctx, by, a.ID, next); err != nil {
		return SignedIn{}, err
	}
	return s.newSession(ctx, c, a, StageFull)
}
