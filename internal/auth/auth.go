package auth

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Role is what an account may do: an admin everything, an operator
// everything but accounts, a viewer only read.
type Role string

// The roles.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleViewer   Role = "viewer"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleOperator || r == RoleViewer }

// Method is an account's usual second factor, the one asked for after the
// password. Recovery codes and passkeys are accepted whatever it is.
type Method string

// The second factors. MethodEmail is every new account's: a code sent to
// its address.
const (
	MethodEmail Method = "email"
	MethodTOTP  Method = "totp"
	MethodOff   Method = "off"
)

// Account is a person who may sign in to the dashboard and the API.
type Account struct {
	ID    int64
	Email string
	Name  string
	Role  Role
	// Hash is the password's argon2id hash, with its costs; empty for an
	// account invited but not yet set up, which cannot sign in.
	Hash string
	// MFA is the second factor asked for after the password.
	MFA Method
	// TOTP is the authenticator secret, sealed (see Sealer); nil unless
	// MFA is MethodTOTP. TOTPPending is one being enrolled, until a code
	// from it proves the authenticator has it.
	TOTP, TOTPPending []byte
	Created           time.Time
}

// Stage is how far a session's sign-in has come.
type Stage string

// A session is StagePassword from the password to the second factor, a
// few minutes at most, and can do nothing but finish signing in; a new
// session replaces it at StageFull.
const (
	StagePassword Stage = "password"
	StageFull     Stage = "full"
)

// Session is one signed-in browser (or one on its way).
type Session struct {
	// Hash is the SHA-256 of the cookie's token, hex: the token itself is
	// never kept.
	Hash    string
	Account int64
	Stage   Stage
	// CSRF is the token a form must carry besides the cookie.
	CSRF     string
	Created  time.Time
	LastSeen time.Time
	Addr     string
	Agent    string
}

// AppSession is a browser signed in to one private app's domain: it
// opens that domain and nothing else, not the admin host.
type AppSession struct {
	Hash     string
	Account  int64
	Domain   string
	Created  time.Time
	LastSeen time.Time
	Addr     string
	Agent    string
}

// Token is an API token's record; the token itself is shown once.
type Token struct {
	// ID names the token in lists and for revocation; it is not secret.
	ID      string
	Hash    string
	Account int64
	Name    string
	Scope   Scope
	Created time.Time
	// Expires is zero for a token that does not expire.
	Expires  time.Time
	LastUsed time.Time
	LastAddr string
}

// Passkey is a WebAuthn credential of an account: the public half of a
// key that a phone, a laptop or a security key holds.
type Passkey struct {
	// ID is the credential ID the authenticator chose.
	ID      []byte
	Account int64
	Name    string
	// PublicKey is the credential's public key, COSE-encoded.
	PublicKey []byte
	// SignCount is the authenticator's signature counter at the last
	// use; zero for authenticators that keep none.
	SignCount uint32
	// AAGUID names the authenticator's model; zeros when it does not
	// say.
	AAGUID     []byte
	Transports []string
	// Flags are the authenticator data flags of the last use: user
	// present, verified, backup eligible, backed up.
	Flags             byte
	AttestationType   string
	AttestationFormat string
	// CloneWarning is set when a signature counter went backwards: two
	// copies of the key may exist.
	CloneWarning bool
	Created      time.Time
	LastUsed     time.Time
}

// EmailCode is the email code of one session's sign-in.
type EmailCode struct {
	Hash    string
	Expires time.Time
	// Tries counts the codes tried against it, this one included.
	Tries int
}

// Store keeps what auth makes: accounts, session and token hashes, second
// factors. Implementations are safe for concurrent use; each method is
// one transaction.
type Store interface {
	// AddAccount adds a, whose ID it fills in; ErrExists when the email
	// (compared without case) has an account.
	AddAccount(ctx context.Context, a Account) (Account, error)
	// Account and AccountByEmail return ErrNotFound when there is none.
	Account(ctx context.Context, id int64) (Account, error)
	AccountByEmail(ctx context.Context, email string) (Account, error)
	// Accounts returns every account, by email.
	Accounts(ctx context.Context) ([]Account, error)
	// RemoveAccount removes an account and everything of it;
	// ErrLastAdmin when it is the last admin.
	RemoveAccount(ctx context.Context, id int64) error
	// SetRole changes an account's role; ErrLastAdmin when that would
	// leave no admin.
	SetRole(ctx context.Context, id int64, r Role) error
	// SetPassword replaces an account's password hash.
	SetPassword(ctx context.Context, id int64, hash string) error
	// SetMFA sets an account's second factor, its TOTP secret and the one
	// being enrolled, and forgets the last TOTP step used.
	SetMFA(ctx context.Context, id int64, m Method, totp, pending []byte) error
	// UseTOTPStep records that the code of this time step was used, and
	// reports false when it or a later one already was: a code is good
	// once.
	UseTOTPStep(ctx context.Context, id int64, step int64) (bool, error)

	// AddSession keeps a new session.
	AddSession(ctx context.Context, s Session) error
	// Session returns a session by its hash; ErrNotFound when there is
	// none.
	Session(ctx context.Context, hash string) (Session, error)
	// TouchSession sets a session's last-seen time.
	TouchSession(ctx context.Context, hash string, at time.Time) error
	// RemoveSession ends one session; RemoveSessions every session of an
	// account but keep (a hash, or empty), and reports how many ended.
	RemoveSession(ctx context.Context, hash string) error
	RemoveSessions(ctx context.Context, account int64, keep string) (int, error)
	// Sessions lists an account's sessions, newest first.
	Sessions(ctx context.Context, account int64) ([]Session, error)

	// SetEmailCode replaces the email code of a session's sign-in.
	SetEmailCode(ctx context.Context, session string, c EmailCode) error
	// TryEmailCode counts one try against a session's email code and
	// returns it, or reports false when there is none or it has had
	// MaxCodeTries tries already.
	TryEmailCode(ctx context.Context, session string) (EmailCode, bool, error)
	// DropEmailCode removes a session's email code.
	DropEmailCode(ctx context.Context, session string) error

	// SetRecoveryCodes replaces an account's recovery codes (hashes).
	SetRecoveryCodes(ctx context.Context, account int64, hashes []string) error
	// UseRecoveryCode removes a recovery code, reporting whether it was
	// there: each is good once.
	UseRecoveryCode(ctx context.Context, account int64, hash string) (bool, error)
	// RecoveryCodes is how many an account has left.
	RecoveryCodes(ctx context.Context, account int64) (int, error)

	// AddToken keeps a new API token.
	AddToken(ctx context.Context, t Token) error
	// TokenByHash returns a token; ErrNotFound when there is none.
	TokenByHash(ctx context.Context, hash string) (Token, error)
	// Tokens lists an account's tokens, newest first.
	Tokens(ctx context.Context, account int64) ([]Token, error)
	// TouchToken records a use; first reports whether it was the first.
	TouchToken(ctx context.Context, id string, at time.Time, addr string) (first bool, err error)
	// RemoveToken revokes a token of an account; ErrNotFound when it has
	// none by that ID.
	RemoveToken(ctx context.Context, account int64, id string) error

	// SeeAddress records a sign-in from addr and returns when the last one
	// from it was (zero for never).
	SeeAddress(ctx context.Context, account int64, addr string, at time.Time) (time.Time, error)

	// AddInvitation keeps an invitation's hash for an account.
	AddInvitation(ctx context.Context, hash string, account int64, expires time.Time) error
	// UseInvitation removes an invitation and returns its account;
	// ErrNotFound when there is none or it expired before now.
	UseInvitation(ctx context.Context, hash string, now time.Time) (int64, error)
	// AddPasswordReset keeps a password reset's hash for an account, in
	// place of any earlier one; UsePasswordReset removes it and returns
	// its account, ErrNotFound when it is unknown or expired. Neither
	// is taken for the other's.
	AddPasswordReset(ctx context.Context, hash string, account int64, expires time.Time) error
	// AddAppCode keeps a one-time code to a private app's domain;
	// UseAppCode removes it and returns its account, ErrNotFound when it
	// is unknown, expired or for another domain.
	AddAppCode(ctx context.Context, hash string, account int64, domain string, expires time.Time) error
	UseAppCode(ctx context.Context, hash, domain string, now time.Time) (int64, error)
	// AddAppSession, AppSession (ErrNotFound when there is none),
	// TouchAppSession and RemoveAppSession keep the sessions of private
	// apps; RemoveSessions ends an account's too.
	AddAppSession(ctx context.Context, s AppSession) error
	AppSession(ctx context.Context, hash string) (AppSession, error)
	TouchAppSession(ctx context.Context, hash string, at time.Time) error
	RemoveAppSession(ctx context.Context, hash string) error
	UsePasswordReset(ctx context.Context, hash string, now time.Time) (int64, error)

	// AddPasskey keeps a new passkey; ErrExists when its credential ID
	// is known already.
	AddPasskey(ctx context.Context, p Passkey) error
	// Passkeys lists an account's passkeys, oldest first.
	Passkeys(ctx context.Context, account int64) ([]Passkey, error)
	// UsePasskey records a sign-in with a passkey: its signature
	// counter, flags, clone warning and last use.
	UsePasskey(ctx context.Context, p Passkey) error
	// RemovePasskey removes a passkey of an account; ErrNotFound when it
	// has none by that ID.
	RemovePasskey(ctx context.Context, account int64, id []byte) error
	// PutCeremony keeps the state of a passkey ceremony for its owner (a
	// hash), replacing the owner's last one and dropping every expired
	// one.
	PutCeremony(ctx context.Context, owner string, data []byte, expires time.Time) error
	// TakeCeremony removes the owner's ceremony and returns it;
	// ErrNotFound when there is none or it expired before now. A
	// ceremony is good once.
	TakeCeremony(ctx context.Context, owner string, now time.Time) ([]byte, error)
}

// Refusal is a request refused for what it asks, not for a fault of the
// server: the API answers it with 400 and its message.
type Refusal struct{ Err error }

func (r *Refusal) Error() string { return r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

func refuse(format string, args ...any) error {
	return &Refusal{fmt.Errorf(format, args...)}
}

// Errors of a Store.
var (
	ErrNotFound  = errors.New("not found")
	ErrExists    = errors.New("already exists")
	ErrLastAdmin = errors.New("the last admin")
)
