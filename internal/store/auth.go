package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"moat/internal/auth"
)

// The accounts' tables. Like the mail queue they are not desired state and
// change outside Update; the auth service records their changes in the
// activity log itself.

var _ auth.Store = (*SQLite)(nil)

const accountColumns = "id, email, name, role, hash, mfa, totp, totp_pending, created"

// stamp writes a time for a column: fixed-width UTC, or empty for zero.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// unstamp reads a column stamp wrote.
func unstamp(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

// AddAccount keeps a new account; see auth.Store.
func (s *SQLite) AddAccount(ctx context.Context, a auth.Account) (auth.Account, error) {
	if a.Created.IsZero() {
		a.Created = s.now()
	}
	res, err := s.write(ctx, "INSERT INTO accounts (email, name, role, hash, mfa, totp, totp_pending, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		a.Email, a.Name, string(a.Role), a.Hash, string(a.MFA), a.TOTP, a.TOTPPending, stamp(a.Created))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint failed") {
			return a, fmt.Errorf("%s: %w", a.Email, auth.ErrExists)
		}
		return a, s.errorf("add account", fmt.Errorf("%s: %w", a.Email, err))
	}
	a.ID, err = res.LastInsertId()
	return a, err
}

func scanAccount(scan func(...any) error) (auth.Account, error) {
	var (
		a             auth.Account
		role, mfa, at string
	)
	if err := scan(&a.ID, &a.Email, &a.Name, &role, &a.Hash, &mfa, &a.TOTP, &a.TOTPPending, &at); err != nil {
		return a, err
	}
	a.Role, a.MFA = auth.Role(role), auth.Method(mfa)
	var err error
	if a.Created, err = unstamp(at); err != nil {
		return a, fmt.Errorf("account %d: %w", a.ID, err)
	}
	return a, nil
}

func (s *SQLite) account(ctx context.Context, what, where string, arg any) (auth.Account, error) {
	a, err := scanAccount(s.db.QueryRowContext(ctx, "SELECT "+accountColumns+" FROM accounts WHERE "+where, arg).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("account %v: %w", arg, auth.ErrNotFound)
	}
	if err != nil {
		return a, s.errorf(what, err)
	}
	return a, nil
}

// Account returns an account by ID; see auth.Store.
func (s *SQLite) Account(ctx context.Context, id int64) (auth.Account, error) {
	return s.account(ctx, "read account", "id = ?", id)
}

// AccountByEmail returns an account by email, without case; see auth.Store.
func (s *SQLite) AccountByEmail(ctx context.Context, email string) (auth.Account, error) {
	return s.account(ctx, "read account", "email = ?", email)
}

// Accounts lists every account; see auth.Store.
func (s *SQLite) Accounts(ctx context.Context) ([]auth.Account, error) {
	return queryAll(ctx, s, "list accounts", scanAccount, "SELECT "+accountColumns+" FROM accounts ORDER BY email")
}

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, s *SQLite, what string, scan func(func(...any) error) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.errorf(what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows.Scan)
		if err != nil {
			return nil, s.errorf(what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(what, err)
	}
	return out, nil
}

// otherAdmins is true when an admin other than the account ? exists: the
// condition that keeps the last admin from being removed or demoted, in
// the same statement as the change so that two removals cannot race past
// it.
const otherAdmins = "EXISTS (SELECT 1 FROM accounts WHERE role = 'admin' AND id != ?)"

// RemoveAccount removes an account unless it is the last admin; see
// auth.Store.
func (s *SQLite) RemoveAccount(ctx context.Context, id int64) error {
	res, err := s.write(ctx, "DELETE FROM accounts WHERE id = ? AND (role != 'admin' OR "+otherAdmins+")", id, id)
	if err != nil {
		return s.errorf("remove account", err)
	}
	return s.lastAdminOr(ctx, res, id)
}

// SetRole changes a role unless it demotes the last admin; see auth.Store.
func (s *SQLite) SetRole(ctx context.Context, id int64, r auth.Role) error {
	res, err := s.write(ctx, "UPDATE accounts SET role = ? WHERE id = ? AND (? = 'admin' OR role != 'admin' OR "+otherAdmins+")", string(r), id, string(r), id)
	if err != nil {
		return s.errorf("set role", err)
	}
	return s.lastAdminOr(ctx, res, id)
}

// lastAdminOr explains a change to account id that touched no row: there
// is no such account, or it is the last admin.
func (s *SQLite) lastAdminOr(ctx context.Context, res sql.Result, id int64) error {
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	a, err := s.Account(ctx, id)
	if err != nil {
		return err
	}
	return fmt.Errorf("%s: %w", a.Email, auth.ErrLastAdmin)
}

// updateAccount runs an UPDATE on one account, ErrNotFound when it is not
// there.
func (s *SQLite) updateAccount(ctx context.Context, what string, id int64, set string, args ...any) error {
	res, err := s.write(ctx, "UPDATE accounts SET "+set+" WHERE id = ?", append(args, id)...)
	if err != nil {
		return s.errorf(what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("account %d: %w", id, auth.ErrNotFound)
	}
	return nil
}

// SetPassword replaces a password hash; see auth.Store.
func (s *SQLite) SetPassword(ctx context.Context, id int64, hash string) error {
	return s.updateAccount(ctx, "set password", id, "hash = ?", hash)
}

// SetMFA sets the second factor; see auth.Store.
func (s *SQLite) SetMFA(ctx context.Context, id int64, m auth.Method, totp, pending []byte) error {
	return s.updateAccount(ctx, "set second factor", id, "mfa = ?, totp = ?, totp_pending = ?, totp_last = 0", string(m), totp, pending)
}

// UseTOTPStep records a TOTP step once; see auth.Store.
func (s *SQLite) UseTOTPStep(ctx context.Context, id int64, step int64) (bool, error) {
	res, err := s.write(ctx, "UPDATE accounts SET totp_last = ? WHERE id = ? AND totp_last < ?", step, id, step)
	if err != nil {
		return false, s.errorf("use TOTP code", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

const sessionColumns = "hash, account, stage, csrf, created, last_seen, addr, agent"

// AddSession keeps a session; see auth.Store.
func (s *SQLite) AddSession(ctx context.Context, x auth.Session) error {
	_, err := s.write(ctx, "INSERT INTO auth_sessions ("+sessionColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		x.Hash, x.Account, string(x.Stage), x.CSRF, stamp(x.Created), stamp(x.LastSeen), x.Addr, x.Agent)
	if err != nil {
		return s.errorf("add session", err)
	}
	return nil
}

func scanSession(scan func(...any) error) (auth.Session, error) {
	var (
		x                    auth.Session
		stage, created, seen string
	)
	if err := scan(&x.Hash, &x.Account, &stage, &x.CSRF, &created, &seen, &x.Addr, &x.Agent); err != nil {
		return x, err
	}
	x.Stage = auth.Stage(stage)
	var err error
	if x.Created, err = unstamp(created); err == nil {
		x.LastSeen, err = unstamp(seen)
	}
	return x, err
}

// Session returns a session; see auth.Store.
func (s *SQLite) Session(ctx context.Context, hash string) (auth.Session, error) {
	x, err := scanSession(s.db.QueryRowContext(ctx, "SELECT "+sessionColumns+" FROM auth_sessions WHERE hash = ?", hash).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return x, fmt.Errorf("session: %w", auth.ErrNotFound)
	}
	if err != nil {
		return x, s.errorf("read session", err)
	}
	return x, nil
}

// TouchSession sets last seen; see auth.Store.
func (s *SQLite) TouchSession(ctx context.Context, hash string, at time.Time) error {
	if _, err := s.write(ctx, "UPDATE auth_sessions SET last_seen = ? WHERE hash = ?", stamp(at), hash); err != nil {
		return s.errorf("touch session", err)
	}
	return nil
}

// RemoveSession ends a session; see auth.Store.
func (s *SQLite) RemoveSession(ctx context.Context, hash string) error {
	if _, err := s.write(ctx, "DELETE FROM auth_sessions WHERE hash = ?", hash); err != nil {
		return s.errorf("remove session", err)
	}
	return nil
}

// RemoveSessions ends an account's sessions but one, and its sessions
// of private apps; see auth.Store.
func (s *SQLite) RemoveSessions(ctx context.Context, account int64, keep string) (int, error) {
	n, err := s.writeTx(ctx, "remove sessions",
		stmt{"DELETE FROM auth_sessions WHERE account = ? AND hash != ?", []any{account, keep}},
		stmt{"DELETE FROM app_sessions WHERE account = ?", []any{account}})
	return int(n), err
}

// Sessions lists an account's sessions; see auth.Store.
func (s *SQLite) Sessions(ctx context.Context, account int64) ([]auth.Session, error) {
	return queryAll(ctx, s, "list sessions", scanSession, "SELECT "+sessionColumns+" FROM auth_sessions WHERE account = ? ORDER BY created DESC, rowid DESC", account)
}

// SetEmailCode replaces a session's email code; see auth.Store.
func (s *SQLite) SetEmailCode(ctx context.Context, session string, c auth.EmailCode) error {
	_, err := s.write(ctx, "INSERT INTO email_codes (session, hash, expires, tries) VALUES (?, ?, ?, 0) ON CONFLICT (session) DO UPDATE SET hash = excluded.hash, expires = excluded.expires, tries = 0",
		session, c.Hash, stamp(c.Expires))
	if err != nil {
		return s.errorf("set email code", err)
	}
	return nil
}

// TryEmailCode counts a try and returns the code; see auth.Store. The
// count and the read are one statement, so that concurrent guesses cannot
// share a try.
func (s *SQLite) TryEmailCode(ctx context.Context, session string) (auth.EmailCode, bool, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return auth.EmailCode{}, false, err
	}
	defer release()
	var (
		c   auth.EmailCode
		exp string
	)
	err = s.db.QueryRowContext(ctx, "UPDATE email_codes SET tries = tries + 1 WHERE session = ? AND tries < ? RETURNING hash, expires, tries", session, auth.MaxCodeTries).Scan(&c.Hash, &exp, &c.Tries)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err == nil {
		c.Expires, err = unstamp(exp)
	}
	if err != nil {
		return c, false, s.errorf("try email code", err)
	}
	return c, true, nil
}

// DropEmailCode removes a session's email code; see auth.Store.
func (s *SQLite) DropEmailCode(ctx context.Context, session string) error {
	if _, err := s.write(ctx, "DELETE FROM email_codes WHERE session = ?", session); err != nil {
		return s.errorf("drop email code", err)
	}
	return nil
}

// SetRecoveryCodes replaces an account's recovery codes in one
// transaction: the old ones die as the new ones are born.
func (s *SQLite) SetRecoveryCodes(ctx context.Context, account int64, hashes []string) error {
	stmts := []stmt{{"DELETE FROM recovery_codes WHERE account = ?", []any{account}}}
	for _, h := range hashes {
		stmts = append(stmts, stmt{"INSERT INTO recovery_codes (account, hash) VALUES (?, ?)", []any{account, h}})
	}
	_, err := s.writeTx(ctx, "set recovery codes", stmts...)
	return err
}

// UseRecoveryCode spends a recovery code; see auth.Store.
func (s *SQLite) UseRecoveryCode(ctx context.Context, account int64, hash string) (bool, error) {
	res, err := s.write(ctx, "DELETE FROM recovery_codes WHERE account = ? AND hash = ?", account, hash)
	if err != nil {
		return false, s.errorf("use recovery code", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// RecoveryCodes counts an account's recovery codes; see auth.Store.
func (s *SQLite) RecoveryCodes(ctx context.Context, account int64) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM recovery_codes WHERE account = ?", account).Scan(&n); err != nil {
		return 0, s.errorf("count recovery codes", err)
	}
	return n, nil
}

const tokenColumns = "id, hash, account, name, scope, created, expires, last_used, last_addr"

// AddToken keeps an API token; see auth.Store.
func (s *SQLite) AddToken(ctx context.Context, t auth.Token) error {
	_, err := s.write(ctx, "INSERT INTO api_tokens ("+tokenColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		t.ID, t.Hash, t.Account, t.Name, string(t.Scope), stamp(t.Created), stamp(t.Expires), stamp(t.LastUsed), t.LastAddr)
	if err != nil {
		return s.errorf("add token", err)
	}
	return nil
}

func scanToken(scan func(...any) error) (auth.Token, error) {
	var (
		t                         auth.Token
		scope, created, exp, last string
	)
	if err := scan(&t.ID, &t.Hash, &t.Account, &t.Name, &scope, &created, &exp, &last, &t.LastAddr); err != nil {
		return t, err
	}
	t.Scope = auth.Scope(scope)
	var err error
	if t.Created, err = unstamp(created); err != nil {
		return t, err
	}
	if t.Expires, err = unstamp(exp); err != nil {
		return t, err
	}
	t.LastUsed, err = unstamp(last)
	return t, err
}

// TokenByHash returns a token; see auth.Store.
func (s *SQLite) TokenByHash(ctx context.Context, hash string) (auth.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM api_tokens WHERE hash = ?", hash).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("token: %w", auth.ErrNotFound)
	}
	if err != nil {
		return t, s.errorf("read token", err)
	}
	return t, nil
}

// Tokens lists an account's tokens; see auth.Store.
func (s *SQLite) Tokens(ctx context.Context, account int64) ([]auth.Token, error) {
	return queryAll(ctx, s, "list tokens", scanToken, "SELECT "+tokenColumns+" FROM api_tokens WHERE account = ? ORDER BY created DESC, id", account)
}

// TouchToken records a token's use; see auth.Store.
func (s *SQLite) TouchToken(ctx context.Context, id string, at time.Time, addr string) (bool, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, s.errorf("touch token", err)
	}
	defer tx.Rollback()
	var before string
	err = tx.QueryRowContext(ctx, "SELECT last_used FROM api_tokens WHERE id = ?", id).Scan(&before)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("token %s: %w", id, auth.ErrNotFound)
	}
	if err != nil {
		return false, s.errorf("touch token", err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE api_tokens SET last_used = ?, last_addr = ? WHERE id = ?", stamp(at), addr, id); err != nil {
		return false, s.errorf("touch token", err)
	}
	if err := tx.Commit(); err != nil {
		return false, s.errorf("touch token", err)
	}
	return before == "", nil
}

// RemoveToken revokes a token; see auth.Store.
func (s *SQLite) RemoveToken(ctx context.Context, account int64, id string) error {
	res, err := s.write(ctx, "DELETE FROM api_tokens WHERE account = ? AND id = ?", account, id)
	if err != nil {
		return s.errorf("remove token", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token %s: %w", id, auth.ErrNotFound)
	}
	return nil
}

// SeeAddress records a sign-in's address; see auth.Store.
func (s *SQLite) SeeAddress(ctx context.Context, account int64, addr string, at time.Time) (time.Time, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return time.Time{}, s.errorf("see address", err)
	}
	defer tx.Rollback()
	var last string
	err = tx.QueryRowContext(ctx, "SELECT last FROM seen_addresses WHERE account = ? AND addr = ?", account, addr).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, s.errorf("see address", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO seen_addresses (account, addr, last) VALUES (?, ?, ?) ON CONFLICT (account, addr) DO UPDATE SET last = excluded.last", account, addr, stamp(at)); err != nil {
		return time.Time{}, s.errorf("see address", err)
	}
	if err := tx.Commit(); err != nil {
		return time.Time{}, s.errorf("see address", err)
	}
	return unstamp(last)
}

// AddInvitation keeps an invitation; see auth.Store.
func (s *SQLite) AddInvitation(ctx context.Context, hash string, account int64, expires time.Time) error {
	if _, err := s.write(ctx, "INSERT INTO invitations (hash, account, expires, purpose) VALUES (?, ?, ?, 'invite')", hash, account, stamp(expires)); err != nil {
		return s.errorf("add invitation", err)
	}
	return nil
}

// UseInvitation spends an invitation; see auth.Store.
func (s *SQLite) UseInvitation(ctx context.Context, hash string, now time.Time) (int64, error) {
	return s.useLink(ctx, "invite", hash, now)
}

// AddPasswordReset keeps a password reset, the account's only one; see
// auth.Store.
func (s *SQLite) AddPasswordReset(ctx context.Context, hash string, account int64, expires time.Time) error {
	_, err := s.writeTx(ctx, "add password reset",
		stmt{"DELETE FROM invitations WHERE purpose = 'reset' AND (account = ? OR expires <= ?)", []any{account, stamp(s.now())}},
		stmt{"INSERT INTO invitations (hash, account, expires, purpose) VALUES (?, ?, ?, 'reset')", []any{hash, account, stamp(expires)}})
	return err
}

// UsePasswordReset spends a password reset; see auth.Store.
func (s *SQLite) UsePasswordReset(ctx context.Context, hash string, now time.Time) (int64, error) {
	return s.useLink(ctx, "reset", hash, now)
}

// useLink spends a one-time link of purpose, unless it has expired, and
// returns its account.
func (s *SQLite) useLink(ctx context.Context, purpose, hash string, now time.Time) (int64, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	var account int64
	err = s.db.QueryRowContext(ctx, "DELETE FROM invitations WHERE hash = ? AND purpose = ? AND expires > ? RETURNING account", hash, purpose, stamp(now)).Scan(&account)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s link: %w", purpose, auth.ErrNotFound)
	}
	if err != nil {
		return 0, s.errorf("use "+purpose+" link", err)
	}
	return account, nil
}

// AddAppCode keeps a one-time code to a private app; see auth.Store.
func (s *SQLite) AddAppCode(ctx context.Context, hash string, account int64, domain string, expires time.Time) error {
	_, err := s.writeTx(ctx, "add app code",
		stmt{"DELETE FROM app_codes WHERE expires <= ?", []any{stamp(s.now())}},
		stmt{"INSERT INTO app_codes (hash, account, domain, expires) VALUES (?, ?, ?, ?)", []any{hash, account, domain, stamp(expires)}})
	return err
}

// UseAppCode spends a one-time code to a private app; see auth.Store.
func (s *SQLite) UseAppCode(ctx context.Context, hash, domain string, now time.Time) (int64, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	var account int64
	err = s.db.QueryRowContext(ctx, "DELETE FROM app_codes WHERE hash = ? AND domain = ? AND expires > ? RETURNING account", hash, domain, stamp(now)).Scan(&account)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("app code: %w", auth.ErrNotFound)
	}
	if err != nil {
		return 0, s.errorf("use app code", err)
	}
	return account, nil
}

const appSessionColumns = "hash, account, domain, created, last_seen, addr, agent"

// AddAppSession keeps a session of a private app; see auth.Store.
func (s *SQLite) AddAppSession(ctx context.Context, x auth.AppSession) error {
	_, err := s.write(ctx, "INSERT INTO app_sessions ("+appSessionColumns+") VALUES (?, ?, ?, ?, ?, ?, ?)",
		x.Hash, x.Account, x.Domain, stamp(x.Created), stamp(x.LastSeen), x.Addr, x.Agent)
	if err != nil {
		return s.errorf("add app session", err)
	}
	return nil
}

// AppSession returns a session of a private app; see auth.Store.
func (s *SQLite) AppSession(ctx context.Context, hash string) (auth.AppSession, error) {
	var (
		x             auth.AppSession
		created, seen string
	)
	err := s.db.QueryRowContext(ctx, "SELECT "+appSessionColumns+" FROM app_sessions WHERE hash = ?", hash).Scan(&x.Hash, &x.Account, &x.Domain, &created, &seen, &x.Addr, &x.Agent)
	if errors.Is(err, sql.ErrNoRows) {
		return x, fmt.Errorf("app session: %w", auth.ErrNotFound)
	}
	if err != nil {
		return x, s.errorf("read app session", err)
	}
	if x.Created, err = unstamp(created); err == nil {
		x.LastSeen, err = unstamp(seen)
	}
	return x, err
}

// TouchAppSession sets a session's last-seen time; see auth.Store.
func (s *SQLite) TouchAppSession(ctx context.Context, hash string, at time.Time) error {
	if _, err := s.write(ctx, "UPDATE app_sessions SET last_seen = ? WHERE hash = ?", stamp(at), hash); err != nil {
		return s.errorf("touch app session", err)
	}
	return nil
}

// RemoveAppSession ends a session of a private app; see auth.Store.
func (s *SQLite) RemoveAppSession(ctx context.Context, hash string) error {
	if _, err := s.write(ctx, "DELETE FROM app_sessions WHERE hash = ?", hash); err != nil {
		return s.errorf("remove app session", err)
	}
	return nil
}
