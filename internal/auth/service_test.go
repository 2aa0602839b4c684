package auth_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/secret"
	"moat/internal/store"
)

// cheap are argon2id costs that keep the tests quick; the tests about the
// costs themselves use secret.Default.
var cheap = secret.Params{Memory: 64, Time: 1, Threads: 1}

const password = "correct horse battery 9"

// rig is a Service on a real SQLite store, with a clock the test moves,
// and the mail, guard events and activity it produced.
type rig struct {
	*auth.Service
	t     testing.TB
	st    *store.SQLite
	clock *clock
	mu    sync.Mutex
	mails []sentMail
	fails []netip.Addr
	log   []auth.Event
	path  string
}

type sentMail struct{ to, subject, body string }

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newRig(t testing.TB, p secret.Params) *rig {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{t: t, st: st, clock: &clock{now: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}, path: dir}
	r.Service = r.service(p)
	return r
}

// service is a new Service on the rig's store, as after a restart.
func (r *rig) service(p secret.Params) *auth.Service {
	r.t.Helper()
	sealer, err := auth.OpenSealer(filepath.Join(r.path, "keys", "totp.key"))
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := auth.New(auth.Options{
		Store:  r.st,
		Sealer: sealer,
		Now:    r.clock.Now,
		Params: p,
		Issuer: "moat example.com",
		RelyingParty: func() auth.RelyingParty {
			return auth.RelyingParty{ID: "moat.example.com", Origins: []string{"https://moat.example.com"}}
		},
		Mail: func(ctx context.Context, to, subject, body string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.mails = append(r.mails, sentMail{to, subject, body})
			return nil
		},
		Fail: func(ctx context.Context, addr netip.Addr, detail string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.fails = append(r.fails, addr)
		},
		Record: func(ctx context.Context, e auth.Event) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.log = append(r.log, e)
			return nil
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

var root = auth.Actor{Who: "root via control socket", From: "unix"}

func (r *rig) account(email string, role auth.Role) auth.Account {
	r.t.Helper()
	a, err := r.AddAccount(context.Background(), root, email, "", role, password)
	if err != nil {
		r.t.Fatal(err)
	}
	return a
}

var codeRE = regexp.MustCompile(`Your moat code is (\d{6})`)

// lastCode is the email code in the last mail to.
func (r *rig) lastCode(to string) string {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.mails) - 1; i >= 0; i-- {
		if m := codeRE.FindStringSubmatch(r.mails[i].body); m != nil && r.mails[i].to == to {
			return m[1]
		}
	}
	r.t.Fatalf("no code was mailed to %s", to)
	return ""
}

func (r *rig) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.log {
		out = append(out, e.Action)
	}
	return out
}

func (r *rig) mailed(subject string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.mails {
		if strings.Contains(m.subject, subject) {
			n++
		}
	}
	return n
}

var (
	ctx   = context.Background()
	home  = auth.Client{Addr: netip.MustParseAddr("203.0.113.7"), Agent: "Firefox"}
	other = auth.Client{Addr: netip.MustParseAddr("198.51.100.9"), Agent: "curl"}
)

// signIn signs in with the password and the email code.
func (r *rig) signIn(c auth.Client, email string) auth.SignedIn {
	r.t.Helper()
	in, err := r.SignIn(ctx, c, email, password)
	if err != nil {
		r.t.Fatal(err)
	}
	full, err := r.Second(ctx, c, in.Token, auth.FactorEmail, r.lastCode(email))
	if err != nil {
		r.t.Fatal(err)
	}
	return full
}

func TestSignInWithPasswordAndEmailCode(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	in, err := r.SignIn(ctx, home, "Owner@Example.com", password)
	if err != nil {
		t.Fatal(err)
	}
	if in.Session.Stage != auth.StagePassword || len(in.Needs) == 0 || in.Needs[0] != auth.FactorEmail {
		t.Fatalf("after the password: stage %s, needs %v; want the email code", in.Session.Stage, in.Needs)
	}
	if _, _, err := r.Authenticate(ctx, in.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("a session before its second factor authenticates: %v", err)
	}
	full, err := r.Second(ctx, home, in.Token, auth.FactorEmail, r.lastCode("owner@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if full.Token == in.Token || full.Session.Stage != auth.StageFull {
		t.Errorf("the signed-in session is %s, same token %v", full.Session.Stage, full.Token == in.Token)
	}
	if _, a, err := r.Authenticate(ctx, full.Token); err != nil || a.Email != "owner@example.com" {
		t.Errorf("the new session: %v, %v", a.Email, err)
	}
	for _, tok := range []string{in.Token} {
		if _, _, err := r.Authenticate(ctx, tok); !errors.Is(err, auth.ErrSession) {
			t.Errorf("the session id from before the sign-in still works: %v", err)
		}
		if _, err := r.Second(ctx, home, tok, auth.FactorEmail, r.lastCode("owner@example.com")); !errors.Is(err, auth.ErrSession) {
			t.Errorf("the pre-sign-in session finishes a second time: %v", err)
		}
	}
	if r.mailed("New sign-in") != 1 {
		t.Errorf("%d new-address mails after the first sign-in, want 1", r.mailed("New sign-in"))
	}
	r.signIn(home, "owner@example.com")
	if r.mailed("New sign-in") != 1 {
		t.Errorf("a second sign-in from the same address was mailed as new")
	}
	r.clock.Add(31 * 24 * time.Hour)
	r.signIn(home, "owner@example.com")
	if r.mailed("New sign-in") != 2 {
		t.Errorf("a sign-in from an address unseen for 31 days was not mailed")
	}
}

func TestEmailCode(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	begin := func() (auth.SignedIn, string) {
		in, err := r.SignIn(ctx, home, "owner@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		return in, r.lastCode("owner@example.com")
	}

	t.Run("expires after 10 minutes", func(t *testing.T) {
		in, code := begin()
		r.clock.Add(auth.CodeTTL + time.Second)
		if _, err := r.Second(ctx, home, in.Token, auth.FactorEmail, code); !errors.Is(err, auth.ErrCode) && !errors.Is(err, auth.ErrSession) {
			t.Errorf("a code 10 minutes old: %v, want refused", err)
		}
	})
	t.Run("single use", func(t *testing.T) {
		in, code := begin()
		if _, err := r.Second(ctx, home, in.Token, auth.FactorEmail, code); err != nil {
			t.Fatal(err)
		}
		in2, _ := begin()
		if _, err := r.Second(ctx, home, in2.Token, auth.FactorEmail, code); !errors.Is(err, auth.ErrCode) {
			t.Errorf("the code of the last sign-in in a new one: %v, want ErrCode", err)
		}
	})
	t.Run("dies after 5 wrong tries", func(t *testing.T) {
		r.clock.Add(time.Hour) // past any back-off of the subtests before
		in, code := begin()
		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		for i := range auth.MaxCodeTries {
			r.clock.Add(time.Minute) // past the account's back-off, well within the code's 10 minutes
			if _, err := r.Second(ctx, home, in.Token, auth.FactorEmail, wrong); !errors.Is(err, auth.ErrCode) {
				t.Fatalf("wrong code %d: %v, want ErrCode", i+1, err)
			}
		}
		r.clock.Add(time.Minute)
		if _, err := r.Second(ctx, home, in.Token, auth.FactorEmail, code); !errors.Is(err, auth.ErrCodeDead) {
			t.Errorf("the right code after 5 wrong ones: %v, want ErrCodeDead", err)
		}
		r.clock.Add(time.Minute)
		if err := r.ResendCode(ctx, home, in.Token); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Second(ctx, home, in.Token, auth.FactorEmail, r.lastCode("owner@example.com")); err != nil {
			t.Errorf("a new code after the old one died: %v", err)
		}
	})
}

func TestTOTP(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	en, err := r.BeginTOTP(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(en.QR) < 8 || string(en.QR[1:4]) != "PNG" || !strings.HasPrefix(en.URL, "otpauth://totp/") || len(en.Secret) < 16 {
		t.Fatalf("enrolment: QR %d bytes, URL %q, secret %q", len(en.QR), en.URL, en.Secret)
	}
	if _, err := r.ConfirmTOTP(ctx, root, a.ID, "123456x"); err == nil {
		t.Fatal("enrolment completed with a wrong code")
	}
	if a2, _ := r.st.Account(ctx, a.ID); a2.MFA != auth.MethodEmail {
		t.Errorf("a wrong enrolment code changed the method to %s", a2.MFA)
	}
	code, _ := totp.GenerateCode(en.Secret, r.clock.Now())
	codes, err := r.ConfirmTOTP(ctx, root, a.ID, code)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != auth.RecoveryCodeCount {
		t.Errorf("%d recovery codes with the first enrolment, want %d", len(codes), auth.RecoveryCodeCount)
	}
	stored, _ := r.st.Account(ctx, a.ID)
	if stored.MFA != auth.MethodTOTP || strings.Contains(string(stored.TOTP), en.Secret) {
		t.Errorf("stored: method %s, secret in clear %v", stored.MFA, strings.Contains(string(stored.TOTP), en.Secret))
	}

	in, err := r.SignIn(ctx, home, "owner@example.com", password)
	if err != nil || in.Needs[0] != auth.FactorTOTP {
		t.Fatalf("sign-in: %v, needs %v", err, in.Needs)
	}
	if _, err := r.Second(ctx, home, in.Token, auth.FactorTOTP, code); !errors.Is(err, auth.ErrCodeUsed) {
		t.Errorf("the enrolment's code again: %v, want ErrCodeUsed", err)
	}
	r.clock.Add(30 * time.Second)
	code, _ = totp.GenerateCode(en.Secret, r.clock.Now())
	if _, err := r.Second(ctx, home, in.Token, auth.FactorTOTP, code); err != nil {
		t.Fatalf("a fresh code: %v", err)
	}
	in, _ = r.SignIn(ctx, home, "owner@example.com", password)
	if _, err := r.Second(ctx, home, in.Token, auth.FactorTOTP, code); !errors.Is(err, auth.ErrCodeUsed) {
		t.Errorf("a TOTP code used twice: %v, want ErrCodeUsed", err)
	}
	// One step of drift either way is accepted, two are not.
	for _, c := range []struct {
		shift time.Duration
		ok    bool
	}{{-30 * time.Second, true}, {30 * time.Second, true}, {90 * time.Second, false}} {
		r.clock.Add(2 * time.Minute)
		code, _ := totp.GenerateCode(en.Secret, r.clock.Now().Add(c.shift))
		in, err := r.SignIn(ctx, home, "owner@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Second(ctx, home, in.Token, auth.FactorTOTP, code)
		if (err == nil) != c.ok {
			t.Errorf("a code %v off: %v, want ok %v", c.shift, err, c.ok)
		}
	}

	// A restart reads the sealed secret back with the key file.
	r.Service = r.service(cheap)
	r.clock.Add(2 * time.Minute)
	in, _ = r.SignIn(ctx, home, "owner@example.com", password)
	code, _ = totp.GenerateCode(en.Secret, r.clock.Now())
	if _, err := r.Second(ctx, home, in.Token, auth.FactorTOTP, code); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	if r.mailed("sign-in changed") == 0 {
		t.Error("the enrolment was not mailed to the account")
	}
}

func TestRecoveryCodes(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	codes, err := r.NewRecoveryCodes(ctx, root, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := r.SignIn(ctx, home, "owner@example.com", password)
	if _, err := r.Second(ctx, home, in.Token, auth.FactorRecovery, strings.ToUpper(codes[3])); err != nil {
		t.Fatalf("a recovery code, typed in capitals: %v", err)
	}
	in, _ = r.SignIn(ctx, home, "owner@example.com", password)
	if _, err := r.Second(ctx, home, in.Token, auth.FactorRecovery, codes[3]); !errors.Is(err, auth.ErrCode) {
		t.Errorf("a recovery code used twice: %v", err)
	}
	fresh, err := r.NewRecoveryCodes(ctx, root, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(time.Minute)
	if _, err := r.Second(ctx, home, in.Token, auth.FactorRecovery, codes[4]); !errors.Is(err, auth.ErrCode) {
		t.Errorf("an old recovery code after new ones were made: %v", err)
	}
	r.clock.Add(time.Minute)
	if _, err := r.Second(ctx, home, in.Token, auth.FactorRecovery, fresh[0]); err != nil {
		t.Errorf("a new recovery code: %v", err)
	}
}

// The path for an unknown account runs the same argon2id hash as for a
// known one: a timing test would be flaky, so the hook shows it.
func TestUnknownAccountCostsAHash(t *testing.T) {
	r := newRig(t, secret.Default)
	r.account("owner@example.com", auth.RoleAdmin)
	var seen []secret.Params
	r.OnVerify(func(hash string) {
		p, err := secret.ParamsOf(hash)
		if err != nil {
			t.Errorf("verified against %q: %v", hash, err)
		}
		seen = append(seen, p)
	})
	for _, email := range []string{"nobody@example.com", "owner@example.com"} {
		if _, err := r.SignIn(ctx, home, email, "wrong password 123"); !errors.Is(err, auth.ErrSignIn) {
			t.Errorf("%s: %v, want ErrSignIn", email, err)
		}
	}
	if len(seen) != 2 || seen[0] != secret.Default || seen[1] != secret.Default {
		t.Errorf("hashes checked: %+v, want one with the default costs for each", seen)
	}
}

// A hash made with lower costs is made again at sign-in.
func TestRehashAtSignIn(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	if p, _ := secret.ParamsOf(a.Hash); p != cheap || !strings.HasPrefix(a.Hash, "$argon2id$") {
		t.Fatalf("hash %s", a.Hash)
	}
	r.Service = r.service(secret.Default)
	r.signIn(home, "owner@example.com")
	after, _ := r.st.Account(ctx, a.ID)
	if p, _ := secret.ParamsOf(after.Hash); p != secret.Default {
		t.Errorf("after sign-in the hash has costs %+v, want %+v", p, secret.Default)
	}
	if ok, _ := secret.Verify(after.Hash, password); !ok {
		t.Error("the new hash does not match the password")
	}
	if !contains(r.actions(), "account.rehash") {
		t.Errorf("no account.rehash in the log: %v", r.actions())
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestFailuresAreRegulated(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	for i := range 3 {
		if _, err := r.SignIn(ctx, home, "owner@example.com", "not the password"); !errors.Is(err, auth.ErrSignIn) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	if len(r.fails) != 3 || r.fails[0] != home.Addr {
		t.Errorf("guard events: %v, want 3 from %v", r.fails, home.Addr)
	}
	r.SignIn(ctx, home, "owner@example.com", "not the password")
	var slow *auth.SlowDown
	if _, err := r.SignIn(ctx, other, "owner@example.com", password); !errors.As(err, &slow) {
		t.Fatalf("after 4 failures, from another address: %v, want a back-off", err)
	}
	r.clock.Add(slow.RetryAfter)
	if _, err := r.SignIn(ctx, other, "owner@example.com", password); err != nil {
		t.Errorf("after the back-off: %v", err)
	}
	// More than 10 a second from one address are refused, whatever the account.
	r.clock.Add(time.Hour)
	refused := 0
	for i := range 15 {
		_, err := r.SignIn(ctx, other, "nobody"+string(rune('a'+i))+"@example.com", "x")
		if errors.As(err, &slow) {
			refused++
		}
	}
	if refused != 5 {
		t.Errorf("%d of 15 sign-ins in the same instant refused, want 5 (10 a second)", refused)
	}
}

func TestSessionTimeouts(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	idle := r.signIn(home, "owner@example.com")
	r.clock.Add(29 * time.Minute)
	if _, _, err := r.Authenticate(ctx, idle.Token); err != nil {
		t.Fatalf("29 minutes idle: %v", err)
	}
	r.clock.Add(31 * time.Minute)
	if _, _, err := r.Authenticate(ctx, idle.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("31 minutes idle: %v, want ErrSession", err)
	}
	busy := r.signIn(home, "owner@example.com")
	for range 12*3 - 1 {
		r.clock.Add(20 * time.Minute)
		if _, _, err := r.Authenticate(ctx, busy.Token); err != nil {
			t.Fatalf("a busy session at %v: %v", r.clock.Now(), err)
		}
	}
	r.clock.Add(21 * time.Minute)
	if _, _, err := r.Authenticate(ctx, busy.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("a session past 12 hours: %v, want ErrSession", err)
	}

	a := r.signIn(home, "owner@example.com")
	b := r.signIn(other, "owner@example.com")
	list, _ := r.Sessions(ctx, a.Account.ID)
	if len(list) != 2 || list[0].Addr != "198.51.100.9" || list[0].Agent != "curl" {
		t.Errorf("sessions: %+v", list)
	}
	if n, err := r.SignOutEverywhere(ctx, root, a.Account.ID, a.Token); err != nil || n != 1 {
		t.Errorf("sign out everywhere else: %d, %v", n, err)
	}
	if _, _, err := r.Authenticate(ctx, b.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("the other session after signing out everywhere: %v", err)
	}
	rot, err := r.Rotate(ctx, home, a.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Authenticate(ctx, a.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("a rotated session's old token: %v", err)
	}
	if _, _, err := r.Authenticate(ctx, rot.Token); err != nil {
		t.Errorf("the rotated session: %v", err)
	}
}

func TestAccounts(t *testing.T) {
	r := newRig(t, cheap)
	admin := r.account("owner@example.com", auth.RoleAdmin)
	var fe *config.FieldError
	for _, c := range []struct {
		email, role, password, field string
	}{
		{"not an email", "admin", password, "email"},
		{"ops@example.com", "root", password, "role"},
		{"ops@example.com", "viewer", "short", "password"},
		{"ops@example.com", "viewer", "ABC123456789", "password"},
		{"owner@example.com", "viewer", password, "email"},
	} {
		_, err := r.AddAccount(ctx, root, c.email, "", auth.Role(c.role), c.password)
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("add %s %s %q: %v, want an error about %s", c.email, c.role, c.password, err, c.field)
		}
	}
	if err := r.RemoveAccount(ctx, root, admin.ID); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Errorf("removing the last admin: %v", err)
	}
	if err := r.SetRole(ctx, root, admin.ID, auth.RoleViewer); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Errorf("demoting the last admin: %v", err)
	}
	ops := r.account("ops@example.com", auth.RoleOperator)
	s := r.signIn(home, "ops@example.com")
	if err := r.SetRole(ctx, root, ops.ID, auth.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Authenticate(ctx, s.Token); !errors.Is(err, auth.ErrSession) {
		t.Errorf("a session from before a role change: %v", err)
	}
	if err := r.RemoveAccount(ctx, root, admin.ID); err != nil {
		t.Errorf("removing an admin when another is left: %v", err)
	}
	list, _ := r.Accounts(ctx)
	if len(list) != 1 || list[0].Email != "ops@example.com" || list[0].Role != auth.RoleAdmin {
		t.Errorf("accounts: %+v", list)
	}
	if err := r.SetPassword(ctx, root, ops.ID, "another long passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SignIn(ctx, home, "ops@example.com", password); !errors.Is(err, auth.ErrSignIn) {
		t.Errorf("the old password after a change: %v", err)
	}
}

func TestInvitation(t *testing.T) {
	r := newRig(t, cheap)
	a, link, err := r.Invite(ctx, root, "owner@example.com", "Owner", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SignIn(ctx, home, "owner@example.com", ""); !errors.Is(err, auth.ErrSignIn) {
		t.Errorf("an invited account signs in without a password: %v", err)
	}
	if _, err := r.Accept(ctx, home, link, "short"); err == nil {
		t.Fatal("a weak password was taken")
	}
	if _, err := r.Accept(ctx, home, link, password); err != nil {
		t.Fatalf("the invitation after a refused password: %v", err)
	}
	if _, err := r.Accept(ctx, home, link, password); err == nil {
		t.Error("an invitation worked twice")
	}
	r.signIn(home, a.Email)

	_, late, _ := r.Invite(ctx, root, "late@example.com", "", auth.RoleViewer)
	r.clock.Add(auth.InvitationTTL + time.Minute)
	if _, err := r.Accept(ctx, home, late, password); err == nil {
		t.Error("an invitation worked after 24 hours")
	}
}

func TestTokens(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	tok, rec, err := r.CreateToken(ctx, root, a.ID, "backup-script", auth.ScopeRead, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "moat_") || len(tok) < 60 || rec.Hash == "" || strings.Contains(rec.Hash, tok[5:]) {
		t.Errorf("token %q, record %+v", tok, rec)
	}
	for range 2 {
		got, acc, err := r.Bearer(ctx, home, tok)
		if err != nil || got.ID != rec.ID || acc.ID != a.ID || got.Scope != auth.ScopeRead {
			t.Fatalf("bearer: %+v %v", got, err)
		}
	}
	uses := 0
	for _, act := range r.actions() {
		if act == "token.first_use" {
			uses++
		}
	}
	if uses != 1 {
		t.Errorf("%d token.first_use entries, want 1", uses)
	}
	list, _ := r.Tokens(ctx, a.ID)
	if len(list) != 1 || list[0].LastAddr != "203.0.113.7" || list[0].LastUsed.IsZero() {
		t.Errorf("tokens: %+v", list)
	}
	if err := r.RevokeToken(ctx, root, a.ID, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Bearer(ctx, home, tok); !errors.Is(err, auth.ErrToken) {
		t.Errorf("a revoked token: %v", err)
	}
	short, _, err := r.CreateToken(ctx, root, a.ID, "ci", auth.ScopeFirewall, r.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(time.Hour)
	if _, _, err := r.Bearer(ctx, home, short); !errors.Is(err, auth.ErrToken) {
		t.Errorf("an expired token: %v", err)
	}
	for _, bad := range []string{"", "moat_", strings.TrimPrefix(tok, "moat_"), tok + "x"} {
		if _, _, err := r.Bearer(ctx, home, bad); !errors.Is(err, auth.ErrToken) {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	var fe *config.FieldError
	if _, _, err := r.CreateToken(ctx, root, a.ID, "x", "everything", time.Time{}); !errors.As(err, &fe) || fe.Field != "scope" {
		t.Errorf("a bad scope: %v", err)
	}
}

func TestDisableMFA(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	s := r.signIn(home, "owner@example.com")
	by := auth.Actor{Who: "owner@example.com", From: "203.0.113.7"}
	if err := r.RequestCode(ctx, home, s.Token); err != nil {
		t.Fatal(err)
	}
	code := r.lastCode("owner@example.com")
	if err := r.DisableMFA(ctx, home, by, s.Token, "yes", auth.FactorEmail, code); err == nil {
		t.Error("disabled without typing disable")
	}
	if err := r.DisableMFA(ctx, home, by, s.Token, "disable", auth.FactorEmail, "000000x"); err == nil {
		t.Error("disabled without a fresh factor")
	}
	if err := r.DisableMFA(ctx, home, by, s.Token, "disable", auth.FactorEmail, code); err != nil {
		t.Fatal(err)
	}
	in, err := r.SignIn(ctx, home, "owner@example.com", password)
	if err != nil || in.Session.Stage != auth.StageFull {
		t.Errorf("with the second factor off: %v, stage %s", err, in.Session.Stage)
	}
	if !contains(r.actions(), "mfa.off") || r.mailed("sign-in changed") == 0 {
		t.Errorf("the change is not logged and mailed: %v", r.actions())
	}
	a, _ := r.Account(ctx, "owner@example.com")
	if err := r.ResetMFA(ctx, root, a.ID); err != nil {
		t.Fatal(err)
	}
	if in, _ := r.SignIn(ctx, home, "owner@example.com", password); in.Session.Stage != auth.StagePassword {
		t.Error("after reset-mfa the email code is not asked for")
	}
}

func TestSealer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "totp.key")
	s, err := auth.OpenSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	sealed, err := s.Seal([]byte("JBSWY3DPEHPK3PXP"), []byte("account 1"))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := auth.OpenSealer(path)
	if got, err := again.Open(sealed, []byte("account 1")); err != nil || string(got) != "JBSWY3DPEHPK3PXP" {
		t.Errorf("reopened: %q %v", got, err)
	}
	if _, err := again.Open(sealed, []byte("account 2")); err == nil {
		t.Error("a secret opened under another account's label")
	}
	os.Chmod(path, 0o644)
	if _, err := auth.OpenSealer(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a key file others can read: %v", err)
	}
}

// TestPasswordReset: a reset link is mailed only to an account that
// exists (the answer is the same either way), works once and for 30
// minutes, is not an invitation, survives a refused password, ends the
// account's sessions, and a newer link replaces an older one.
func TestPasswordReset(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	in := r.signIn(home, a.Email)
	var links []string
	link := func(secret string) string {
		links = append(links, secret)
		return "https://admin.example.com/signin/reset?token=" + secret
	}
	if err := r.RequestPasswordReset(ctx, other, "nobody@example.com", link); err != nil || len(links) != 0 {
		t.Fatalf("an unknown address: %v, %d links", err, len(links))
	}
	if err := r.RequestPasswordReset(ctx, other, "Owner@Example.com", link); err != nil || len(links) != 1 || r.mailed("Set a new moat password") != 1 {
		t.Fatalf("the owner's address: %v, %d links", err, len(links))
	}
	// A second request within a minute mails nothing more.
	if err := r.RequestPasswordReset(ctx, other, "owner@example.com", link); err != nil || len(links) != 1 {
		t.Fatalf("a repeat within a minute: %v, %d links", err, len(links))
	}
	first := links[0]
	if _, err := r.Accept(ctx, other, first, "a new passphrase for moat"); err == nil {
		t.Error("a reset link was taken as an invitation")
	}
	if _, err := r.ResetPassword(ctx, other, first, "short"); err == nil {
		t.Fatal("a weak password was taken")
	}
	if _, err := r.ResetPassword(ctx, other, first, "a new passphrase for moat"); err != nil {
		t.Fatalf("the link after a refused password: %v", err)
	}
	if _, err := r.ResetPassword(ctx, other, first, "another passphrase for moat"); !errors.Is(err, auth.ErrResetLink) {
		t.Errorf("a link used twice: %v", err)
	}
	if _, _, err := r.Authenticate(ctx, in.Token); err == nil {
		t.Error("the session from before the reset still works")
	}
	if _, err := r.SignIn(ctx, home, a.Email, "a new passphrase for moat"); err != nil {
		t.Errorf("the new password: %v", err)
	}

	r.clock.Add(auth.ResetEvery)
	r.RequestPasswordReset(ctx, other, a.Email, link)
	r.clock.Add(auth.ResetEvery)
	r.RequestPasswordReset(ctx, other, a.Email, link)
	if len(links) != 3 {
		t.Fatalf("%d links after two more requests a minute apart", len(links))
	}
	if _, err := r.ResetPassword(ctx, other, links[1], "a third passphrase here"); !errors.Is(err, auth.ErrResetLink) {
		t.Errorf("a link replaced by a newer one: %v", err)
	}
	r.clock.Add(auth.ResetTTL)
	if _, err := r.ResetPassword(ctx, other, links[2], "a third passphrase here"); !errors.Is(err, auth.ErrResetLink) {
		t.Errorf("a link after 30 minutes: %v", err)
	}
	if !contains(r.actions(), "account.reset_requested") || !contains(r.actions(), "account.reset_failed") {
		t.Errorf("activity: %v", r.actions())
	}
}

// TestAppSessions: a one-time code from a full session opens a session
// on one private app's domain only, once and within a minute; that
// session opens neither another domain nor the admin host, and ends with
// the account's other sessions.
func TestAppSessions(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	in := r.signIn(home, a.Email)
	code, err := r.AppCode(ctx, in.Token, "Grafana.Example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.OpenApp(ctx, home, code, "pma.example.com"); !errors.Is(err, auth.ErrAppCode) {
		t.Errorf("a code for grafana on pma: %v", err)
	}
	tok, _, acc, err := r.OpenApp(ctx, home, code, "grafana.example.com")
	if err != nil || acc.ID != a.ID {
		t.Fatalf("the code on its own domain: %v", err)
	}
	if _, _, _, err := r.OpenApp(ctx, home, code, "grafana.example.com"); !errors.Is(err, auth.ErrAppCode) {
		t.Errorf("a code used twice: %v", err)
	}
	if _, got, err := r.AppVisitor(ctx, tok, "grafana.example.com"); err != nil || got.Email != a.Email {
		t.Errorf("the app session on its domain: %v", err)
	}
	if _, _, err := r.AppVisitor(ctx, tok, "pma.example.com"); !errors.Is(err, auth.ErrSession) {
		t.Errorf("the app session on another domain: %v", err)
	}
	if _, _, err := r.Authenticate(ctx, tok); err == nil {
		t.Error("an app session opens the admin host")
	}
	if _, err := r.AppCode(ctx, tok, "pma.example.com"); err == nil {
		t.Error("an app session makes codes")
	}
	late, _ := r.AppCode(ctx, in.Token, "grafana.example.com")
	r.clock.Add(auth.AppCodeTTL + time.Second)
	if _, _, _, err := r.OpenApp(ctx, home, late, "grafana.example.com"); !errors.Is(err, auth.ErrAppCode) {
		t.Errorf("a code after a minute: %v", err)
	}
	if _, err := r.SignOutEverywhere(ctx, root, a.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.AppVisitor(ctx, tok, "grafana.example.com"); !errors.Is(err, auth.ErrSession) {
		t.Errorf("the app session after signing out everywhere: %v", err)
	}
}
