package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

const testPassword = "correct horse battery 9"

// fromHeader stands in for the edge's ClientIP: the address a request
// comes from, as the test says.
const fromHeader = "X-Test-From"

// remoteRig is the HTTPS API on a real SQLite store and auth service,
// with the mail and guard events it produced.
type remoteRig struct {
	t       testing.TB
	srv     *httptest.Server
	handler http.Handler
	api     *Server
	auth    *auth.Service
	st      *store.SQLite
	mu      sync.Mutex
	mails   []string
	fails   []netip.Addr
}

func newRemote(t testing.TB) *remoteRig {
	t.Helper()
	return newRemoteWith(t, secret.Params{Memory: 64, Time: 1, Threads: 1})
}

// newRemoteWith is newRemote hashing passwords with params.
func newRemoteWith(t testing.TB, params secret.Params) *remoteRig {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, err := auth.OpenSealer(filepath.Join(dir, "keys", "totp.key"))
	if err != nil {
		t.Fatal(err)
	}
	rg := &remoteRig{t: t, st: st}
	rg.auth, err = auth.New(auth.Options{
		Store:  st,
		Sealer: sealer,
		Params: params,
		Issuer: "moat example.com",
		RelyingParty: func() auth.RelyingParty {
			return auth.RelyingParty{ID: "admin.example.com", Origins: []string{passkeyOrigin}}
		},
		Mail: func(_ context.Context, to, subject, body string) error {
			rg.mu.Lock()
			defer rg.mu.Unlock()
			rg.mails = append(rg.mails, to+"\n"+body)
			return nil
		},
		Fail: func(_ context.Context, addr netip.Addr, _ string) {
			rg.mu.Lock()
			defer rg.mu.Unlock()
			rg.fails = append(rg.fails, addr)
		},
		Record: func(ctx context.Context, e auth.Event) error {
			return st.Record(ctx, store.Entry{Who: e.Who, From: e.From, Action: e.Action, Target: e.Target, Detail: e.Detail})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rm := &Remote{
		API:  &Server{Store: st, Log: slog.New(slog.DiscardHandler), Auth: rg.auth},
		Auth: rg.auth,
		Client: func(r *http.Request) netip.Addr {
			if a, err := netip.ParseAddr(r.Header.Get(fromHeader)); err == nil {
				return a
			}
			return netip.MustParseAddr("127.0.0.1")
		},
	}
	rg.handler, rg.api = rm.Handler(), rm.API
	rg.srv = httptest.NewTLSServer(rg.handler)
	t.Cleanup(rg.srv.Close)
	return rg
}

func (rg *remoteRig) account(email string, role auth.Role) auth.Account {
	rg.t.Helper()
	a, err := rg.auth.AddAccount(context.Background(), auth.Actor{Who: "root", From: "unix"}, email, "", role, testPassword)
	if err != nil {
		rg.t.Fatal(err)
	}
	return a
}

var codeRE = regexp.MustCompile(`Your moat code is (\d{6})`)

// code is the email code in the newest mail to email.
func (rg *remoteRig) code(email string) string {
	rg.t.Helper()
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for i := len(rg.mails) - 1; i >= 0; i-- {
		if to, body, _ := strings.Cut(rg.mails[i], "\n"); to == email {
			if m := codeRE.FindStringSubmatch(body); m != nil {
				return m[1]
			}
		}
	}
	rg.t.Fatalf("no code was mailed to %s", email)
	return ""
}

// browser is one client with its own cookies and CSRF token.
type browser struct {
	rg   *remoteRig
	c    *http.Client
	csrf string
	// bearer, when set, is sent as the Authorization header.
	bearer string
	from   string
}

func (rg *remoteRig) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		rg.t.Fatal(err)
	}
	return &browser{rg: rg, c: &http.Client{Transport: rg.srv.Client().Transport, Jar: jar}}
}

// reply is an answer: its status, headers and body.
type reply struct {
	code int
	h    http.Header
	body []byte
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
}

// problem is the error body's message, field and fix.
func (r reply) problem(t testing.TB) Problem {
	t.Helper()
	var e Error
	r.decode(t, &e)
	if e.Error.Message == "" {
		t.Fatalf("an error without a message: %s", r.body)
	}
	return e.Error
}

func (b *browser) do(method, path string, body any, hdr ...string) reply {
	b.rg.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.rg.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.rg.srv.URL+path, rd)
	if err != nil {
		b.rg.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if b.csrf != "" {
		req.Header.Set(CSRFHeader, b.csrf)
	}
	if b.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+b.bearer)
	}
	if b.from != "" {
		req.Header.Set(fromHeader, b.from)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.rg.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.rg.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, data}
}

// must is do that wants the status want.
func (b *browser) must(want int, method, path string, body any, hdr ...string) reply {
	b.rg.t.Helper()
	r := b.do(method, path, body, hdr...)
	if r.code != want {
		b.rg.t.Fatalf("%s %s: %d %s, want %d", method, path, r.code, r.body, want)
	}
	return r
}

// signIn signs in with the password and the email code.
func (b *browser) signIn(email string) {
	b.rg.t.Helper()
	var out SignInResponse
	b.must(200, "POST", "/v1/auth/signin", SignInRequest{email, testPassword}).decode(b.rg.t, &out)
	if out.Stage != auth.StagePassword {
		b.rg.t.Fatalf("after the password: %+v", out)
	}
	b.must(200, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorEmail, Code: b.rg.code(email)}).decode(b.rg.t, &out)
	if out.Stage != auth.StageFull || out.CSRF == "" {
		b.rg.t.Fatalf("after the code: %+v", out)
	}
	b.csrf = out.CSRF
}

func cookieOf(t *testing.T, r reply) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.h}).Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie was set: %v", CookieName, r.h)
	return nil
}

func TestRemoteSignIn(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	b := rg.browser()

	first := b.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword})
	var out SignInResponse
	first.decode(t, &out)
	if out.Stage != auth.StagePassword || len(out.Needs) == 0 || out.Account != nil || out.CSRF != "" {
		t.Fatalf("after the password: %s", first.body)
	}
	raw := first.h.Get("Set-Cookie")
	for _, flag := range []string{CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(raw, flag) {
			t.Errorf("Set-Cookie %q lacks %s", raw, flag)
		}
	}
	if strings.Contains(strings.ToLower(raw), "domain=") {
		t.Errorf("Set-Cookie %q names a domain", raw)
	}
	pending := cookieOf(t, first)

	// Half signed in reaches nothing.
	for _, path := range []string{"/v1/apps", "/v1/me", "/v1/state"} {
		if r := b.do("GET", path, nil); r.code != 401 {
			t.Errorf("GET %s with the password only: %d %s", path, r.code, r.body)
		}
	}

	// A wrong code, then the right one; the session gets a new id.
	b.must(401, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorEmail, Code: "000000"})
	full := b.must(200, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorEmail, Code: rg.code("owner@example.com")})
	full.decode(t, &out)
	if c := cookieOf(t, full); c.Value == pending.Value {
		t.Error("the session kept its id at full sign-in")
	}
	if out.Stage != auth.StageFull || out.Account.Email != "owner@example.com" || out.CSRF == "" {
		t.Fatalf("after the code: %s", full.body)
	}
	b.csrf = out.CSRF

	var me Me
	b.must(200, "GET", "/v1/me", nil).decode(t, &me)
	if me.Email != "owner@example.com" || me.Role != auth.RoleAdmin || me.CSRF != out.CSRF {
		t.Errorf("me: %+v", me)
	}
	b.must(200, "GET", "/v1/apps", nil)

	// The old, pending cookie is no good.
	stale := rg.browser()
	u := mustURL(t, rg.srv.URL)
	stale.c.Jar.SetCookies(u, []*http.Cookie{pending})
	stale.must(401, "GET", "/v1/me", nil)

	// Changes carry the CSRF token, and come from moat's own origin.
	app := map[string]any{"name": "gitea", "domains": []string{"git.example.com"}, "upstream": "http://127.0.0.1:3000"}
	if p := b.must(403, "POST", "/v1/apps", app, CSRFHeader, "").problem(t); !strings.Contains(p.Message, "CSRF") {
		t.Errorf("no CSRF token: %s", p.Message)
	}
	b.must(403, "POST", "/v1/apps", app, CSRFHeader, "wrong")
	b.must(403, "POST", "/v1/apps", app, "Origin", "https://evil.example")
	b.must(403, "POST", "/v1/apps", app, "Sec-Fetch-Site", "cross-site")
	b.must(200, "POST", "/v1/apps", app)

	// The session list shows this session, with where it came from.
	var sessions []SessionInfo
	b.must(200, "GET", "/v1/me/sessions", nil).decode(t, &sessions)
	if len(sessions) != 1 || !sessions[0].Current || sessions[0].Addr != "127.0.0.1" || sessions[0].Agent == "" {
		t.Errorf("sessions: %+v", sessions)
	}

	// The change is in the activity log as the account's.
	var acts []store.Entry
	b.must(200, "GET", "/v1/activity", nil).decode(t, &acts)
	found := false
	for _, a := range acts {
		if a.Target == "gitea" && a.Who == "owner@example.com" && a.From == "127.0.0.1" {
			found = true
		}
	}
	if !found {
		t.Errorf("the app's addition is not the owner's in the log: %+v", acts)
	}

	// Signing out ends the session and clears the cookie.
	so := b.must(200, "POST", "/v1/auth/signout", nil)
	if c := cookieOf(t, so); c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("sign-out cookie: %+v", c)
	}
	b.must(401, "GET", "/v1/me", nil)
}

func TestRemoteSignOutEverywhere(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	phone, laptop := rg.browser(), rg.browser()
	phone.signIn("owner@example.com")
	laptop.signIn("owner@example.com")
	var sessions []SessionInfo
	laptop.must(200, "GET", "/v1/me/sessions", nil).decode(t, &sessions)
	if len(sessions) != 2 {
		t.Fatalf("sessions: %+v", sessions)
	}
	laptop.must(200, "DELETE", "/v1/me/sessions", nil)
	phone.must(401, "GET", "/v1/me", nil)
	laptop.must(200, "GET", "/v1/me", nil)
}

func TestRemoteTokens(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	rg.account("viewer@example.com", auth.RoleViewer)
	b := rg.browser()
	b.signIn("owner@example.com")

	make := func(name string, scope auth.Scope) (NewToken, *browser) {
		t.Helper()
		var tok NewToken
		b.must(201, "POST", "/v1/me/tokens", TokenRequest{Name: name, Scope: scope}).decode(t, &tok)
		if !strings.HasPrefix(tok.Token, "moat_") || tok.Scope != scope {
			t.Fatalf("token: %+v", tok)
		}
		script := rg.browser()
		script.bearer = tok.Token
		return tok, script
	}
	read, reader := make("dashboard-screen", auth.ScopeRead)
	_, fw := make("firewall-script", auth.ScopeFirewall)
	_, writer := make("deploy", auth.ScopeWrite)
	app := map[string]any{"name": "gitea", "domains": []string{"git.example.com"}, "upstream": "http://127.0.0.1:3000"}

	cases := []struct {
		who          *browser
		name         string
		method, path string
		body         any
		want         int
	}{
		{reader, "read token reads apps", "GET", "/v1/apps", nil, 200},
		{reader, "read token cannot add an app", "POST", "/v1/apps", app, 403},
		{reader, "read token cannot change a rule", "POST", "/v1/firewall/rules", map[string]any{}, 403},
		{fw, "firewall token reads the firewall", "GET", "/v1/firewall", nil, 200},
		{fw, "firewall token cannot read the accounts", "GET", "/v1/users", nil, 403},
		{fw, "firewall token cannot add an SSH key", "POST", "/v1/ssh/keys", map[string]any{"key": "x"}, 403},
		{fw, "firewall token cannot read the apps", "GET", "/v1/apps", nil, 403},
		{writer, "write token adds an app", "POST", "/v1/apps", app, 200},
		{writer, "write token cannot add an account", "POST", "/v1/users", UserRequest{Email: "x@example.com", Role: auth.RoleAdmin}, 403},
		{writer, "write token cannot replace the state", "PUT", "/v1/state", map[string]any{}, 403},
		{writer, "no token makes tokens", "POST", "/v1/me/tokens", TokenRequest{Name: "more", Scope: auth.ScopeAdmin}, 403},
		{writer, "no token lists tokens", "GET", "/v1/me/tokens", nil, 403},
		{writer, "no token changes a password", "PUT", "/v1/me/password", PasswordRequest{testPassword, "another long passphrase 7"}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.who.do(c.method, c.path, c.body)
			if r.code != c.want {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, r.code, r.body, c.want)
			}
			if r.code >= 400 {
				r.problem(t)
			}
		})
	}

	// A token for the viewer cannot do more than the viewer.
	v := rg.browser()
	v.signIn("viewer@example.com")
	var vt NewToken
	v.must(201, "POST", "/v1/me/tokens", TokenRequest{Name: "viewer-admin", Scope: auth.ScopeAdmin}).decode(t, &vt)
	vs := rg.browser()
	vs.bearer = vt.Token
	vs.must(200, "GET", "/v1/apps", nil)
	vs.must(403, "DELETE", "/v1/apps/gitea", nil)
	v.must(403, "GET", "/v1/users", nil)

	// The list never shows a token, and a revoked token is dead.
	var list []TokenInfo
	lr := b.must(200, "GET", "/v1/me/tokens", nil)
	lr.decode(t, &list)
	if len(list) != 3 || strings.Contains(string(lr.body), "moat_") {
		t.Fatalf("tokens: %s", lr.body)
	}
	b.must(200, "DELETE", "/v1/me/tokens/"+read.ID, nil)
	reader.must(401, "GET", "/v1/apps", nil)
	bad := rg.browser()
	bad.bearer = "moat_nonsense"
	bad.must(401, "GET", "/v1/apps", nil)
	bad.must(401, "GET", "/v1/apps", nil, "Authorization", "Basic b3duZXI6cGFzcw==")
}

func TestRemoteTOTPAndRecoveryCodes(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	b := rg.browser()
	b.signIn("owner@example.com")

	var en TOTPEnrolment
	b.must(200, "POST", "/v1/me/totp", nil).decode(t, &en)
	if en.Secret == "" || !strings.HasPrefix(en.URL, "otpauth://totp/") || !bytes.HasPrefix(en.QR, []byte("\x89PNG")) {
		t.Fatalf("enrolment: secret %q url %q qr %d bytes", en.Secret, en.URL, len(en.QR))
	}
	b.must(401, "POST", "/v1/me/totp/confirm", CodeRequest{"123456"})
	code, err := totp.GenerateCode(en.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old := b.c.Jar.Cookies(mustURL(t, rg.srv.URL))
	conf := b.must(200, "POST", "/v1/me/totp/confirm", CodeRequest{code})
	var rc RecoveryCodes
	conf.decode(t, &rc)
	if len(rc.Codes) < 8 || rc.CSRF == "" || rc.CSRF == b.csrf {
		t.Fatalf("confirm: %s", conf.body)
	}
	cookieOf(t, conf)
	b.csrf = rc.CSRF
	b.must(200, "GET", "/v1/me", nil)

	// The session before the change is no more.
	stale := rg.browser()
	stale.c.Jar.SetCookies(mustURL(t, rg.srv.URL), old)
	stale.must(401, "GET", "/v1/me", nil)

	var me Me
	b.must(200, "GET", "/v1/me", nil).decode(t, &me)
	if me.MFA != auth.MethodTOTP || me.RecoveryCodes != len(rc.Codes) {
		t.Errorf("me after enrolment: %+v", me)
	}

	// A sign-in now wants the authenticator; a recovery code does too,
	// once.
	other := rg.browser()
	var out SignInResponse
	other.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword}).decode(t, &out)
	other.must(200, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorRecovery, Code: rc.Codes[0]})
	again := rg.browser()
	again.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword})
	again.must(401, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorRecovery, Code: rc.Codes[0]})

	// The app's next code signs in, once: the enrolment spent this one.
	next, err := totp.GenerateCode(en.Secret, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	withApp := rg.browser()
	withApp.from = "192.0.2.19" // 127.0.0.1 has had its 10 sign-in requests this second
	withApp.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword}).decode(t, &out)
	if !slices.Contains(out.Needs, auth.FactorTOTP) {
		t.Fatalf("after the password, needs %v", out.Needs)
	}
	withApp.must(401, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorTOTP, Code: code})
	withApp.must(200, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorTOTP, Code: next}).decode(t, &out)
	if out.Stage != auth.StageFull {
		t.Fatalf("after the app's code: %+v", out)
	}
	replayed := rg.browser()
	replayed.from = "192.0.2.20"
	replayed.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword})
	replayed.must(401, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorTOTP, Code: next})

	// Turning it off wants the word and a fresh factor.
	b.must(400, "POST", "/v1/me/mfa/disable", DisableRequest{Confirm: "yes", Factor: auth.FactorRecovery, Code: rc.Codes[1]})
	b.must(401, "POST", "/v1/me/mfa/disable", DisableRequest{Confirm: "disable", Factor: auth.FactorRecovery, Code: rc.Codes[0]})
	var off RecoveryCodes
	b.must(200, "POST", "/v1/me/mfa/disable", DisableRequest{Confirm: "disable", Factor: auth.FactorRecovery, Code: rc.Codes[1]}).decode(t, &off)
	b.csrf = off.CSRF
	b.must(200, "GET", "/v1/me", nil).decode(t, &me)
	if me.MFA == auth.MethodTOTP {
		t.Errorf("me after disable: %+v", me)
	}
}

func TestRemoteAccounts(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	b := rg.browser()
	b.signIn("owner@example.com")

	// Bad input names the field.
	cases := []struct {
		name  string
		body  any
		field string
	}{
		{"short password", UserRequest{Email: "ops@example.com", Role: auth.RoleOperator, Password: "short"}, "password"},
		{"common password", UserRequest{Email: "ops@example.com", Role: auth.RoleOperator, Password: "password1234"}, "password"},
		{"bad email", UserRequest{Email: "not an address", Role: auth.RoleOperator, Password: testPassword}, "email"},
		{"bad role", UserRequest{Email: "ops@example.com", Role: "root", Password: testPassword}, "role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := b.must(400, "POST", "/v1/users", c.body).problem(t)
			if p.Field != c.field || p.Fix == "" {
				t.Errorf("%+v, want field %s with a fix", p, c.field)
			}
			if strings.Contains(p.Value, testPassword) || (c.field == "password" && p.Value != "(hidden)") {
				t.Errorf("the error shows the password: %+v", p)
			}
		})
	}
	if p := b.must(400, "POST", "/v1/users", map[string]any{"email": "x@example.com", "rol": "admin"}).problem(t); !strings.Contains(p.Message, "rol") {
		t.Errorf("unknown field: %+v", p)
	}

	// An invitation, taken up.
	var nu NewUser
	b.must(201, "POST", "/v1/users", UserRequest{Email: "ops@example.com", Role: auth.RoleOperator}).decode(t, &nu)
	if nu.Invitation == "" || !nu.Invited {
		t.Fatalf("invitation: %+v", nu)
	}
	anon := rg.browser()
	anon.must(401, "POST", "/v1/auth/invitation", InvitationRequest{"wrong", testPassword})
	anon.must(400, "POST", "/v1/auth/invitation", InvitationRequest{nu.Invitation, "short"})
	anon.must(200, "POST", "/v1/auth/invitation", InvitationRequest{nu.Invitation, testPassword})
	anon.must(401, "POST", "/v1/auth/invitation", InvitationRequest{nu.Invitation, testPassword})
	ops := rg.browser()
	ops.signIn("ops@example.com")
	ops.must(403, "GET", "/v1/users", nil)
	ops.must(200, "POST", "/v1/apps", map[string]any{"name": "gitea", "domains": []string{"git.example.com"}, "upstream": "http://127.0.0.1:3000"})

	// The last admin stays.
	if p := b.must(409, "DELETE", "/v1/users/owner@example.com", nil).problem(t); !strings.Contains(p.Message, "admin") {
		t.Errorf("last admin: %+v", p)
	}
	b.must(409, "PATCH", "/v1/users/owner@example.com", UserPatch{Role: auth.RoleViewer})
	b.must(404, "DELETE", "/v1/users/nobody@example.com", nil)
	b.must(200, "PATCH", "/v1/users/ops@example.com", UserPatch{Role: auth.RoleViewer})
	// A change of role ends the account's sessions; signed in again, it
	// has the new role.
	ops.must(401, "GET", "/v1/me", nil)
	ops.signIn("ops@example.com")
	ops.must(200, "GET", "/v1/apps/gitea", nil)
	ops.must(403, "DELETE", "/v1/apps/gitea", nil)
	var list []Account
	lr := b.must(200, "GET", "/v1/users?limit=1", nil)
	lr.decode(t, &list)
	if len(list) != 1 || lr.h.Get("X-Total-Count") != "2" || !strings.Contains(lr.h.Get("Link"), `rel="next"`) {
		t.Errorf("users page: %s %v", lr.body, lr.h)
	}
	if strings.Contains(string(lr.body), "argon2") {
		t.Errorf("a hash in the list: %s", lr.body)
	}
	// The recovery path is root's on the box, not the admin's here.
	b.must(403, "PUT", "/v1/users/ops@example.com/password", PasswordSet{"another long passphrase 7"})
	b.must(403, "POST", "/v1/users/ops@example.com/reset-mfa", nil)
	box := Local(rg.api.Handler(), store.Actor{Who: "root", From: "local"})
	if err := box.Do(context.Background(), "PUT", "/v1/users/ops@example.com/password", PasswordSet{"another long passphrase 7"}, nil); err != nil {
		t.Fatalf("root on the box: %v", err)
	}
	b.must(200, "DELETE", "/v1/users/ops@example.com", nil)
	ops.must(401, "GET", "/v1/me", nil)
}

func TestRemotePasswordChange(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	b, other := rg.browser(), rg.browser()
	b.signIn("owner@example.com")
	other.signIn("owner@example.com")
	if p := b.must(400, "PUT", "/v1/me/password", PasswordRequest{testPassword, "short"}).problem(t); p.Field != "password" {
		t.Errorf("short: %+v", p)
	}
	b.must(401, "PUT", "/v1/me/password", PasswordRequest{"not the password", "another long passphrase 7"})
	var out SignInResponse
	b.must(200, "PUT", "/v1/me/password", PasswordRequest{testPassword, "another long passphrase 7"}).decode(t, &out)
	b.csrf = out.CSRF
	b.must(200, "GET", "/v1/me", nil)
	other.must(401, "GET", "/v1/me", nil)
	fresh := rg.browser()
	fresh.must(401, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", testPassword})
	fresh.must(200, "POST", "/v1/auth/signin", SignInRequest{"owner@example.com", "another long passphrase 7"})
}

// TestRemoteWrongPasswords: each failure reaches the guard with the
// client's address, and a run of them is slowed with 429 and
// Retry-After; an unknown account is answered as a known one.
func TestRemoteWrongPasswords(t *testing.T) {
	rg := newRemote(t)
	rg.account("owner@example.com", auth.RoleAdmin)
	rg.account("second@example.com", auth.RoleAdmin)
	attacker := rg.browser()
	attacker.from = "203.0.113.9"
	var last reply
	for i := range 10 {
		last = attacker.do("POST", "/v1/auth/signin", SignInRequest{"owner@example.com", "guess " + strconv.Itoa(i)})
		if last.code == 429 {
			break
		}
		if last.code != 401 {
			t.Fatalf("attempt %d: %d %s", i, last.code, last.body)
		}
	}
	if last.code != 429 {
		t.Fatalf("ten wrong passwords were never slowed: %d %s", last.code, last.body)
	}
	if s, err := strconv.Atoi(last.h.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", last.h.Get("Retry-After"))
	}
	last.problem(t)
	rg.mu.Lock()
	fails := append([]netip.Addr(nil), rg.fails...)
	rg.mu.Unlock()
	if len(fails) < 3 {
		t.Fatalf("the guard heard of %d failures", len(fails))
	}
	for _, a := range fails {
		if a != netip.MustParseAddr("203.0.113.9") {
			t.Errorf("a failure from %v, want the client's address", a)
		}
	}

	unknown := rg.browser()
	unknown.from = "198.51.100.7"
	p := unknown.must(401, "POST", "/v1/auth/signin", SignInRequest{"nobody@example.com", testPassword}).problem(t)
	q := rg.browser().must(401, "POST", "/v1/auth/signin", SignInRequest{"second@example.com", "still wrong"}, fromHeader, "198.51.100.8").problem(t)
	if p.Message != q.Message {
		t.Errorf("an unknown account is told apart: %q vs %q", p.Message, q.Message)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FuzzAPIBody sends any body to any route, signed in with an admin
// token: every refusal is a 4xx with a message, never a 5xx.
func FuzzAPIBody(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"POST", "/v1/apps", `{"name":"gitea","domains":["git.example.com"],"upstream":"http://127.0.0.1:3000"}`},
		{"POST", "/v1/apps", `{"name":"","domains":[1]}`},
		{"PATCH", "/v1/apps/gitea", `{"upstream":"ftp://x"}`},
		{"PATCH", "/v1/server", `{"domain":"-"}`},
		{"PUT", "/v1/state", `{"state":{"apps":[{"name":"a b"}]}}`},
		{"POST", "/v1/users", `{"email":"a@example.com","role":"admin","password":"x"}`},
		{"POST", "/v1/users", `{"email":"\u0000","role":"viewer"}`},
		{"PATCH", "/v1/users/a@example.com", `{"role":null}`},
		{"POST", "/v1/me/tokens", `{"name":"x","scope":"everything"}`},
		{"POST", "/v1/me/tokens", `{"name":"x","scope":"read","expires":"yesterday"}`},
		{"POST", "/v1/auth/signin", `{"email":1}`},
		{"POST", "/v1/auth/second", `{"factor":"sms","code":"1"}`},
		{"POST", "/v1/auth/invitation", `[]`},
		{"POST", "/v1/firewall/rules", `{"port":70000}`},
		{"POST", "/v1/ssh/keys", `{"key":"ssh-dss AAAA"}`},
		{"POST", "/v1/guard/bans", `{"prefix":"0.0.0.0/0"}`},
		{"GET", "/v1/apps?limit=-1&offset=x", ``},
		{"GET", "/v1/activity?limit=x", ``},
		{"DELETE", "/v1/me/tokens/nope", ``},
		{"POST", "/v1/auth/passkey", ``},
		{"POST", "/v1/auth/passkey/finish", `{"id":1,"response":{}}`},
		{"POST", "/v1/auth/second", `{"factor":"passkey","credential":{"type":"public-key"}}`},
		{"POST", "/v1/auth/second/passkey", `{}`},
		{"POST", "/v1/me/passkeys/finish", `{"name":"x","credential":"no"}`},
		{"DELETE", "/v1/me/passkeys/!!", ``},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.body)
	}
	rg := newRemote(f)
	a := rg.account("owner@example.com", auth.RoleAdmin)
	tok, _, err := rg.auth.CreateToken(context.Background(), auth.Actor{Who: "root", From: "unix"}, a.ID, "fuzz", auth.ScopeAdmin, time.Time{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, "https://moat.example.com"+path, strings.NewReader(body))
		if err != nil || !strings.HasPrefix(req.URL.Path, "/v1/") {
			t.Skip("not a request the server would read")
		}
		req.RemoteAddr = "127.0.0.1:4000"
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		rg.handler.ServeHTTP(w, req)
		switch {
		case w.Code >= 500:
			t.Fatalf("%s %s %q: %d %s", method, path, body, w.Code, w.Body)
		case w.Code >= 400:
			var e Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
				t.Fatalf("%s %s %q: %d without a message: %s", method, path, body, w.Code, w.Body)
			}
		}
	})
}

// TestRemoteStateHidesSecrets: over HTTPS even an admin reads the state
// without the smarthost's password, and writing that state back keeps
// the password; root on the server reads it whole.
func TestRemoteStateHidesSecrets(t *testing.T) {
	rg := newRemote(t)
	ctx := context.Background()
	const pass = "provider-secret-5d1a"
	if _, err := rg.st.Update(ctx, store.Actor{Who: "root", From: "unix"}, false, func(s *config.State) error {
		s.Mail.Smarthost = config.Smarthost{Host: "smtp.mailgun.org", Username: "postmaster@example.com", Password: pass}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rg.account("owner@example.com", auth.RoleAdmin)
	b := rg.browser()
	b.signIn("owner@example.com")
	r := b.must(200, "GET", "/v1/state", nil)
	if strings.Contains(string(r.body), pass) {
		t.Fatalf("GET /v1/state over HTTPS shows the smarthost's password:\n%s", r.body)
	}
	var got StateResponse
	r.decode(t, &got)
	if got.State.Mail.Smarthost.Password != config.Hidden {
		t.Errorf("password shown as %q, want %q", got.State.Mail.Smarthost.Password, config.Hidden)
	}
	got.State.Mail.Smarthost.Username = "other@example.com"
	b.must(200, "PUT", "/v1/state", got.State)
	st, _, err := rg.st.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mail.Smarthost.Password != pass || st.Mail.Smarthost.Username != "other@example.com" {
		t.Errorf("after writing the shown state back: %+v; want the password kept and the username changed", st.Mail.Smarthost)
	}
	var root StateResponse
	if err := Local(rg.api.Handler(), store.Actor{Who: "root", From: "unix"}).Do(ctx, "GET", "/v1/state", nil, &root); err != nil {
		t.Fatal(err)
	}
	if root.State.Mail.Smarthost.Password != pass {
		t.Errorf("root on the server reads the password as %q", root.State.Mail.Smarthost.Password)
	}
}
