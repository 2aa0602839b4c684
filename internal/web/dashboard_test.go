package web

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/secret"
	"moat/internal/store"
	"moat/internal/testenv"
	"moat/internal/updates"
)

var browser testenv.SharedBrowser

func TestMain(m *testing.M) {
	code := m.Run()
	browser.Close()
	os.Exit(code)
}

const testPassword = "correct horse battery 9"

// site is the dashboard and the API over HTTPS on a real store, with the
// mail moat sent.
type site struct {
	srv  *httptest.Server
	auth *auth.Service
	// named is the site's URL by a name, for passkeys.
	named string
	store store.Store
	// dir is the data directory, where the backups' password is.
	dir string
	// api is the API behind the pages, for a test to point its audit.
	api   *api.Server
	mu    sync.Mutex
	mails []string
}

func newSite(t testing.TB) *site {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, err := auth.OpenSealer(filepath.Join(dir, "keys", "totp.key"))
	if err != nil {
		t.Fatal(err)
	}
	s := &site{store: st, dir: dir}
	s.auth, err = auth.New(auth.Options{Store: st, Sealer: sealer, Params: secret.Params{Memory: 64, Time: 1, Threads: 1},
		// Passkeys need a name, not an address: the test browser maps
		// every .test name to loopback.
		RelyingParty: func() auth.RelyingParty { return auth.RelyingParty{ID: "moat.test", Origins: []string{s.named}} },
		Mail: func(_ context.Context, to, subject, body string) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.mails = append(s.mails, body)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	d := &Dashboard{Auth: s.auth, Log: log}
	// The updates the audit reads are a temp root's, not this machine's.
	s.api = &api.Server{Store: st, Log: log, Auth: s.auth, DataDir: dir, Updates: updates.Host{Root: t.TempDir()}}
	rm := &api.Remote{API: s.api, Auth: s.auth, Pages: d.Handler()}
	d.API = rm.Handler()
	s.srv = httptest.NewTLSServer(d.API)
	s.named = "https://moat.test:" + s.srv.URL[strings.LastIndexByte(s.srv.URL, ':')+1:]
	t.Cleanup(s.srv.Close)
	return s
}

var codeRE = regexp.MustCompile(`Your moat code is (\d{6})`)

func (s *site) lastCode(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.mails) - 1; i >= 0; i-- {
		if m := codeRE.FindStringSubmatch(s.mails[i]); m != nil {
			return m[1]
		}
	}
	t.Fatal("no code was mailed")
	return ""
}

// signInSteps fills the sign-in form.
func signInSteps(base, email string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), email),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("code")),
	)
}

func TestDashboardSignIn(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	root := auth.Actor{Who: "root", From: "unix"}
	if _, err := s.auth.AddAccount(ctx, root, "owner@example.com", "", auth.RoleAdmin, testPassword); err != nil {
		t.Fatal(err)
	}
	b := browser.Get(t)
	shots := t.TempDir()

	t.Run("password and email code", func(t *testing.T) {
		tab := b.Tab(t)
		if err := chromedp.Do(tab, signInSteps(s.srv.URL, "owner@example.com")); err != nil {
			t.Fatal(err)
		}
		testenv.Screenshot(t, tab, shots, "second-step")
		// A wrong code is shown on the page; the right one signs in.
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("code"), "000000"), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.CSS(".error"))); err != nil {
			t.Fatal(err)
		}
		msg, _ := chromedp.Run(tab, chromedp.Text(chromedp.CSS(".error")))
		if !strings.Contains(msg, "code is wrong") {
			t.Errorf("a wrong code says %q", msg)
		}
		if err := chromedp.Do(tab, chromedp.SetValue(chromedp.ID("code"), s.lastCode(t)), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
			t.Fatal(err)
		}
		head, _ := chromedp.Run(tab, chromedp.Text(chromedp.CSS("header")))
		if !strings.Contains(head, "owner@example.com") {
			t.Errorf("the overview's header: %q", head)
		}
		testenv.Screenshot(t, tab, shots, "signed-in")
		// Signing out ends the session: the overview asks to sign in.
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("header button")), chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("password"))); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("password and TOTP", func(t *testing.T) {
		a, err := s.auth.Account(ctx, "owner@example.com")
		if err != nil {
			t.Fatal(err)
		}
		en, err := s.auth.BeginTOTP(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		now, _ := totp.GenerateCode(en.Secret, time.Now())
		if _, err := s.auth.ConfirmTOTP(ctx, root, a.ID, now); err != nil {
			t.Fatal(err)
		}
		next, _ := totp.GenerateCode(en.Secret, time.Now().Add(30*time.Second)) // the enrolment spent now's
		tab := b.Tab(t)
		if err := chromedp.Do(tab, signInSteps(s.srv.URL, "owner@example.com"),
			chromedp.SendKeys(chromedp.ID("code"), next), chromedp.Click(chromedp.ID("verify")),
			chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
			t.Fatal(err)
		}
	})
}

var resetRE = regexp.MustCompile(`(https://\S+/signin/reset\?token=\S+)`)

// TestForgottenPassword: the link mailed sets a new password once; the
// old password and a second use of the link are refused, and an unknown
// address gets the same answer as a known one.
func TestForgottenPassword(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	if _, err := s.auth.AddAccount(ctx, auth.Actor{Who: "root", From: "unix"}, "owner@example.com", "", auth.RoleAdmin, testPassword); err != nil {
		t.Fatal(err)
	}
	tab := browser.Get(t).Tab(t)
	ask := func(email string) string {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/signin"), chromedp.Click(chromedp.ID("forgot")), chromedp.WaitVisible(chromedp.ID("send-link")),
			chromedp.SendKeys(chromedp.ID("email"), email), chromedp.Click(chromedp.ID("send-link")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(text(t, tab, "notice"), email, "EMAIL")
	}
	unknown := ask("nobody@example.com")
	s.mu.Lock()
	n := len(s.mails)
	s.mu.Unlock()
	if known := ask("owner@example.com"); known != unknown {
		t.Errorf("the answers differ: %q for an account, %q for none", known, unknown)
	}
	s.mu.Lock()
	var link string
	if len(s.mails) == n+1 {
		if m := resetRE.FindStringSubmatch(s.mails[n]); m != nil {
			link = m[1]
		}
	}
	s.mu.Unlock()
	if link == "" || !strings.HasPrefix(link, s.srv.URL+"/") {
		t.Fatalf("no reset link was mailed to the account (%q)", link)
	}
	set := func() {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("new")),
			chromedp.SendKeys(chromedp.ID("new"), "a new passphrase for moat"), chromedp.SendKeys(chromedp.ID("repeat"), "a new passphrase for moat"),
			chromedp.Click(chromedp.ID("set-password"))); err != nil {
			t.Fatal(err)
		}
	}
	set()
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("signin"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.auth.SignIn(ctx, auth.Client{}, "owner@example.com", testPassword); err == nil {
		t.Error("the old password still signs in")
	}
	if _, err := s.auth.SignIn(ctx, auth.Client{}, "owner@example.com", "a new passphrase for moat"); err != nil {
		t.Errorf("the new password: %v", err)
	}
	set()
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("error"))); err != nil {
		t.Fatal(err)
	}
	if msg := text(t, tab, "error"); !strings.Contains(msg, "used already") {
		t.Errorf("the link a second time: %q", msg)
	}
}
