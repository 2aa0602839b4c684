package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"

	"moat/internal/config"
	"moat/internal/ratelimit"
	"moat/internal/secret"
)

// Timings of a sign-in.
const (
	// PendingTTL is how long a sign-in may wait between its password and
	// its second factor.
	PendingTTL = 10 * time.Minute
	// CodeTTL is how long an email code is good for.
	CodeTTL = 10 * time.Minute
	// MaxCodeTries is how many codes may be tried against one email code
	// before a new one must be sent.
	MaxCodeTries = 5
	// NewAddressAfter is how long an address must not have been seen for
	// an account before a sign-in from it is emailed to the account.
	NewAddressAfter = 30 * 24 * time.Hour
	// InvitationTTL is how long an invitation link is good for.
	InvitationTTL = 24 * time.Hour
	// touchEvery is how stale a session's last-seen time may get before a
	// request writes it again: a write per request would cap the API at
	// the disk's speed.
	touchEvery = time.Minute
)

// LoginRule is the most sign-in requests (password, second factor, a new
// email code) one address may make: 10 a second, as Cloudron allows.
var LoginRule = ratelimit.Rule{Requests: 10, Per: time.Second}

// Options are a Service's dependencies.
type Options struct {
	Store Store
	// Sealer encrypts TOTP secrets at rest.
	Sealer *Sealer
	// Mail sends moat's own mail to an account: the email code, a sign-in
	// from a new address, a change of second factor.
	Mail func(ctx context.Context, to, subject, body string) error
	// Fail tells the guard's moat jail of a failed sign-in from addr.
	Fail func(ctx context.Context, addr netip.Addr, detail string)
	// Record writes an event to the activity log.
	Record func(ctx context.Context, e Event) error
	// Settings returns the current auth settings (policy, timeouts).
	Settings func() config.Auth
	// Issuer names the server in authenticator apps: "moat example.com".
	Issuer string
	// RelyingParty is the site passkeys are bound to, as it is now; nil
	// or an empty ID means no passkeys.
	RelyingParty func() RelyingParty
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Params are the argon2id costs of new hashes; zero means
	// secret.Default. A stored hash with lower costs is made again at
	// the next sign-in.
	Params secret.Params
	Logger *slog.Logger
}

// Event is an entry for the activity log.
type Event struct {
	Who, From      string
	Action, Target string
	Detail         string
}

// Actor is who asks for a change, for the activity log.
type Actor struct{ Who, From string }

// Client is where a sign-in or a request comes from.
type Client struct {
	Addr  netip.Addr
	Agent string
}

// Service is the accounts, their sign-ins, sessions and tokens.
type Service struct {
	o       Options
	params  secret.Params
	dummy   string // the hash checked for an account that does not exist
	limiter *ratelimit.Memory
	backoff backoff
	resets  resets

	verifyMu   sync.Mutex
	verifyHook func(hash string) // tests: each hash a password is checked against
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Sealer == nil {
		return nil, errors.New("auth: a store and a sealer are needed")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Settings == nil {
		o.Settings = func() config.Auth { return config.Auth{} }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Service{o: o, params: o.Params, limiter: ratelimit.NewMemory(10000)}
	if s.params == (secret.Params{}) {
		s.params = secret.Default
	}
	pw, err := secret.Password(16)
	if err != nil {
		return nil, err
	}
	if s.dummy, err = s.params.Hash(pw); err != nil {
		return nil, err
	}
	return s, nil
}

// Errors of a sign-in. They say no more than a person needs: a wrong
// password and an unknown email read the same.
var (
	ErrSignIn   = errors.New("the email or the password is wrong")
	ErrCode     = errors.New("the code is wrong or has expired")
	ErrCodeUsed = errors.New("this code was used already: wait for the next one")
	ErrCodeDead = errors.New("too many wrong codes: ask for a new one")
	ErrSession  = errors.New("not signed in, or the session has ended: sign in again")
	ErrToken    = errors.New("the API token is not valid: it was revoked, has expired or was never issued")
)

// SlowDown refuses a request that came too soon: too many from one
// address, or after failures for one account.
type SlowDown struct{ RetryAfter time.Duration }

func (e *SlowDown) Error() string {
	return fmt.Sprintf("too many sign-in attempts: try again in %v", max(e.RetryAfter.Round(time.Second), time.Second))
}

func (s *Service) now() time.Time { return s.o.Now() }

func (s *Service) record(ctx context.Context, who Actor, action, target, detail string) {
	if s.o.Record == nil {
		return
	}
	if err := s.o.Record(ctx, Event{Who: who.Who, From: who.From, Action: action, Target: target, Detail: detail}); err != nil {
		s.o.Logger.Error("auth: activity log", "action", action, "err", err)
	}
}

func (s *Service) mail(ctx context.Context, to, subject, body string) {
	if s.o.Mail == nil {
		return
	}
	if err := s.o.Mail(ctx, to, subject, body); err != nil {
		s.o.Logger.Error("auth: mail to an account", "subject", subject, "err", err)
	}
}

// fail counts a failed attempt: for the guard, for the account's back-off
// and in the activity log.
func (s *Service) fail(ctx context.Context, c Client, email, action, detail string) {
	if email != "" { // a passkey refused before it named its account backs no account off
		s.backoff.fail(normEmail(email), s.now())
	}
	if s.o.Fail != nil && c.Addr.IsValid() {
		s.o.Fail(ctx, c.Addr, detail)
	}
	s.record(ctx, Actor{Who: email, From: addrString(c.Addr)}, action, email, detail)
}

// regulate refuses a request from an address over LoginRule, or for an
// account still backing off.
func (s *Service) regulate(c Client, email string) error {
	now := s.now()
	if d := s.limiter.Allow(ratelimit.KeyFor(0, c.Addr, 0), LoginRule, now); !d.Allowed {
		return &SlowDown{RetryAfter: d.RetryAfter}
	}
	if email == "" {
		return nil
	}
	if wait := s.backoff.wait(normEmail(email), now); wait > 0 {
		return &SlowDown{RetryAfter: wait}
	}
	return nil
}

// verify checks a password against a hash, or against the dummy hash
// when there is no account (or it has no password yet), so that the
// answer takes as long either way.
func (s *Service) verify(hash, password string) bool {
	real := hash != ""
	if !real {
		hash = s.dummy
	}
	s.verifyMu.Lock()
	hook := s.verifyHook
	s.verifyMu.Unlock()
	if hook != nil {
		hook(hash)
	}
	ok, err := secret.Verify(hash, password)
	return ok && err == nil && real
}

// Accounts.

// normEmail is the form an email is compared in.
func normEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// CheckEmail parses an account's email address.
func CheckEmail(email string) (string, error) {
	e := strings.TrimSpace(email)
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" || !strings.Contains(e[strings.LastIndexByte(e, '@')+1:], ".") && !strings.HasSuffix(e, "@localhost") {
		return "", &config.FieldError{Field: "email", Value: email, Problem: "is not an email address", Fix: "write the address the account's mail goes to, like owner@example.com"}
	}
	return e, nil
}

func checkName(name string) error {
	if len(name) > 100 || strings.ContainsFunc(name, unicode.IsControl) {
		return &config.FieldError{Field: "name", Value: name, Problem: "is not a person's name", Fix: "write up to 100 characters, no line breaks"}
	}
	return nil
}

// AddAccount makes an account with a password.
func (s *Service) AddAccount(ctx context.Context, by Actor, email, name string, role Role, password string) (Account, error) {
	email, err := CheckEmail(email)
	if err != nil {
		return Account{}, err
	}
	if err := checkName(name); err != nil {
		return Account{}, err
	}
	if !role.Valid() {
		return Account{}, &config.FieldError{Field: "role", Value: string(role), Problem: "is not a role", Fix: "write admin, operator or viewer"}
	}
	var hash string
	if password != "" {
		if err := CheckPassword(s.o.Settings().Policy(), password, email, name); err != nil {
			return Account{}, err
		}
		if hash, err = s.params.Hash(password); err != nil {
			return Account{}, err
		}
	}
	a, err := s.o.Store.AddAccount(ctx, Account{Email: email, Name: name, Role: role, Hash: hash, MFA: MethodEmail, Created: s.now()})
	if errors.Is(err, ErrExists) {
		return a, &config.FieldError{Field: "email", Value: email, Problem: "has an account already", Fix: "use another address, or moat user passwd " + email}
	}
	if err != nil {
		return a, err
	}
	s.record(ctx, by, "account.add", email, "role "+string(role))
	return a, nil
}

// Invite makes an account without a password and returns the secret of
// its one-time invitation, good for InvitationTTL: whoever opens the link
// sets the password.
func (s *Service) Invite(ctx context.Context, by Actor, email, name string, role Role) (Account, string, error) {
	a, err := s.AddAccount(ctx, by, email, name, role, "")
	if err != nil {
		return a, "", err
	}
	tok, hash, err := newSecret("moati_")
	if err != nil {
		return a, "", err
	}
	if err := s.o.Store.AddInvitation(ctx, hash, a.ID, s.now().Add(InvitationTTL)); err != nil {
		return a, "", err
	}
	return a, tok, nil
}

// Accept spends an invitation and sets the account's password.
func (s *Service) Accept(ctx context.Context, c Client, invitation, password string) (Account, error) {
	id, err := s.o.Store.UseInvitation(ctx, hashSecret(invitation), s.now())
	if errors.Is(err, ErrNotFound) {
		return Account{}, errors.New("the invitation is not valid: it was used, has expired (after 24 hours) or was never issued; ask for a new one")
	}
	if err != nil {
		return Account{}, err
	}
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return a, err
	}
	if err := s.SetPassword(ctx, Actor{Who: a.Email, From: addrString(c.Addr)}, a.ID, password); err != nil {
		// The invitation is spent, and a wrong password must not waste it.
		if tok := hashSecret(invitation); s.o.Store.AddInvitation(ctx, tok, a.ID, s.now().Add(InvitationTTL)) != nil {
			s.o.Logger.Error("auth: could not put back an invitation", "account", a.Email)
		}
		return a, err
	}
	return s.o.Store.Account(ctx, id)
}

// SetPassword replaces an account's password and ends its sessions.
func (s *Service) SetPassword(ctx context.Context, by Actor, id int64, password string) error {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return err
	}
	if err := CheckPassword(s.o.Settings().Policy(), password, a.Email, a.Name); err != nil {
		return err
	}
	hash, err := s.params.Hash(password)
	if err != nil {
		return err
	}
	if err := s.o.Store.SetPassword(ctx, id, hash); err != nil {
		return err
	}
	n, err := s.o.Store.RemoveSessions(ctx, id, "")
	if err != nil {
		return err
	}
	s.record(ctx, by, "account.password", a.Email, fmt.Sprintf("password changed; %d sessions ended", n))
	s.mail(ctx, a.Email, "Your moat password was changed", fmt.Sprintf("The password of %s was changed by %s from %s, and every session was signed out.\n\nIf this was not you, ask the server's owner to run: moat user reset-mfa %s && moat user passwd %s\n", a.Email, by.Who, by.From, a.Email, a.Email))
	return nil
}

// SetRole changes an account's role and ends its sessions, so that the
// new role is in force at once.
func (s *Service) SetRole(ctx context.Context, by Actor, id int64, r Role) error {
	if !r.Valid() {
		return &config.FieldError{Field: "role", Value: string(r), Problem: "is not a role", Fix: "write admin, operator or viewer"}
	}
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return err
	}
	if err := s.o.Store.SetRole(ctx, id, r); err != nil {
		if errors.Is(err, ErrLastAdmin) {
			return lastAdminError(a.Email + " is the last admin: make another account admin first")
		}
		return err
	}
	if _, err := s.o.Store.RemoveSessions(ctx, id, ""); err != nil {
		return err
	}
	s.record(ctx, by, "account.role", a.Email, string(a.Role)+" -> "+string(r))
	return nil
}

// RemoveAccount removes an account, its sessions and its tokens.
func (s *Service) RemoveAccount(ctx context.Context, by Actor, id int64) error {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return err
	}
	if err := s.o.Store.RemoveAccount(ctx, id); err != nil {
		if errors.Is(err, ErrLastAdmin) {
			return lastAdminError(a.Email + " is the last admin and cannot be removed: add another admin first (moat user add EMAIL --role admin)")
		}
		return err
	}
	s.record(ctx, by, "account.remove", a.Email, "")
	return nil
}

// lastAdminError is ErrLastAdmin said for a person.
type lastAdminError string

func (e lastAdminError) Error() string   { return string(e) }
func (e lastAdminError) Is(t error) bool { return t == ErrLastAdmin }

// RecoveryCodesLeft is how many recovery codes an account has.
func (s *Service) RecoveryCodesLeft(ctx context.Context, id int64) (int, error) {
	return s.o.Store.RecoveryCodes(ctx, id)
}

// Account returns an account by email.
func (s *Service) Account(ctx context.Context, email string) (Account, error) {
	a, err := s.o.Store.AccountByEmail(ctx, strings.TrimSpace(email))
	if errors.Is(err, ErrNotFound) {
		return a, fmt.Errorf("no account %s: moat user list shows them", email)
	}
	return a, err
}

// Accounts lists the accounts.
func (s *Service) Accounts(ctx context.Context) ([]Account, error) { return s.o.Store.Accounts(ctx) }

// Secrets.

// newSecret returns a random 256-bit secret with a prefix, and its hash.
func newSecret(prefix string) (tok, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("auth: random: %w", err)
	}
	tok = prefix + hex.EncodeToString(b)
	return tok, hashSecret(tok), nil
}

// hashSecret is how session tokens, API tokens and invitations are kept:
// they are 256 random bits, so a fast hash is as good as a slow one.
func hashSecret(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.Unmap().String()
}
