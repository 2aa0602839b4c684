package web

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"moat/internal/testenv"
)

// TestAccountTab: an authenticator app set up from its QR page keeps
// the session and shows the recovery codes once; a token is shown once,
// works, and stops when revoked; the password changes only with the
// current one; the second step goes off only with the typed word and a
// code; "sign out everywhere else" ends the other sessions.
func TestAccountTab(t *testing.T) {
	s := newSite(t)
	b := browser.Get(t)
	tab := s.signedIn(t, b, "owner@example.com")
	shots := t.TempDir()
	open := func() {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/account"), chromedp.WaitVisible(chromedp.ID("mfa-state"))); err != nil {
			t.Fatal(err)
		}
	}
	open()
	testenv.Screenshot(t, tab, shots, "account")
	unlabelled, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input:not([type=hidden]):not([hidden]), select, textarea")].filter(e => e.labels.length == 0).map(e => e.id || e.name)`))
	if err != nil || len(unlabelled) > 0 {
		t.Errorf("fields without a label: %v %v", unlabelled, err)
	}

	var secret string
	var recovery []string
	t.Run("authenticator app", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("setup-totp")), chromedp.WaitVisible(chromedp.ID("qr"))); err != nil {
			t.Fatal(err)
		}
		testenv.Screenshot(t, tab, shots, "totp")
		secret = strings.TrimSpace(text(t, tab, "totp-secret"))
		code, err := totp.GenerateCode(secret, time.Now())
		if err != nil {
			t.Fatalf("secret %q: %v", secret, err)
		}
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("totp-code"), code), chromedp.Click(chromedp.ID("confirm-totp")), chromedp.WaitVisible(chromedp.ID("codes"))); err != nil {
			t.Fatal(err)
		}
		recovery, err = chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#codes code")].map(e => e.textContent)`))
		if err != nil || len(recovery) < 8 {
			t.Fatalf("the recovery codes shown: %v %v", recovery, err)
		}
		// The session was given a new id: the browser has it.
		open()
		if st := text(t, tab, "mfa-state"); !strings.Contains(st, "authenticator app") {
			t.Errorf("after the setup the second step is %q", st)
		}
	})

	t.Run("token shown once, works, revoked", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("token-name"), "backup"), chromedp.SetValue(chromedp.ID("token-scope"), "read"),
			chromedp.Click(chromedp.ID("make-token")), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(text(t, tab, "token"))
		status := func() int {
			req, _ := http.NewRequest("GET", s.srv.URL+"/v1/status", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := s.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if c := status(); c != 200 {
			t.Fatalf("the new token: %d", c)
		}
		open()
		if page, _ := chromedp.Run(tab, chromedp.TextContent(chromedp.ID("tokens"))); strings.Contains(page, tok) {
			t.Error("the token is shown again on the Account tab")
		}
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("revoke-token-0")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		if c := status(); c != 401 {
			t.Errorf("the revoked token: %d", c)
		}
	})

	t.Run("password", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("current"), "not my password"), chromedp.SendKeys(chromedp.ID("new"), "a much better passphrase 7"),
			chromedp.SendKeys(chromedp.ID("repeat"), "a much better passphrase 7")); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, tab, "change-password", "password")
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("current"), testPassword), chromedp.SendKeys(chromedp.ID("new"), "a much better passphrase 7"),
			chromedp.SendKeys(chromedp.ID("repeat"), "a much better passphrase 7"), chromedp.Click(chromedp.ID("change-password")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		open() // still signed in, with the session the change gave
	})

	t.Run("other sessions signed out", func(t *testing.T) {
		other := b.Tab(t)
		code, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
		if err := chromedp.Do(other, chromedp.Navigate(s.srv.URL+"/signin"), chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.SendKeys(chromedp.ID("email"), "owner@example.com"), chromedp.SendKeys(chromedp.ID("password"), "a much better passphrase 7"),
			chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("code")),
			chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
			t.Fatal(err)
		}
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("end-sessions")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(other, chromedp.Navigate(s.srv.URL+"/account"), chromedp.WaitVisible(chromedp.ID("password"))); err != nil {
			t.Fatalf("the other session still opens the Account tab: %v", err)
		}
	})

	t.Run("second step off only when typed", func(t *testing.T) {
		open()
		// The authenticator's codes of now and the next step are spent:
		// a recovery code proves it is the owner.
		code := recovery[0]
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("show-disable")), chromedp.Click(chromedp.ID("factor-recovery")), chromedp.SendKeys(chromedp.ID("disable-code"), code), chromedp.SendKeys(chromedp.ID("confirm_word"), "yes")); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, tab, "disable-mfa", "disable")
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("show-disable")), chromedp.Click(chromedp.ID("factor-recovery")), chromedp.SendKeys(chromedp.ID("disable-code"), code), chromedp.SendKeys(chromedp.ID("confirm_word"), "disable"),
			chromedp.Click(chromedp.ID("disable-mfa")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		if st := text(t, tab, "mfa-state"); !strings.Contains(st, "None") {
			t.Errorf("after turning it off: %q", st)
		}
	})
}
