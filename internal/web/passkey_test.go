package web

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"moat/internal/auth"
)

// virtualAuthenticator gives the tab a platform authenticator that
// verifies its user, as a phone or a laptop's fingerprint reader does.
func virtualAuthenticator(t *testing.T, tab context.Context) {
	t.Helper()
	if _, err := chromedp.Call(tab, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}}); err != nil {
		t.Fatal(err)
	}
}

// TestPasskeysInTheBrowser: a passkey added on the Account tab signs in
// without a password, and as the second step after one.
func TestPasskeysInTheBrowser(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	if _, err := s.auth.AddAccount(ctx, auth.Actor{Who: "root", From: "unix"}, "owner@example.com", "", auth.RoleAdmin, testPassword); err != nil {
		t.Fatal(err)
	}
	tab := browser.Get(t).Tab(t)
	virtualAuthenticator(t, tab)
	if err := chromedp.Do(tab, signInSteps(s.named, "owner@example.com")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("code"), s.lastCode(t)),
		chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(s.named+"/account"), chromedp.WaitVisible(chromedp.ID("add-passkey")),
		chromedp.SendKeys(chromedp.ID("passkey-name"), "laptop"), chromedp.Click(chromedp.ID("add-passkey-button")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
		t.Fatal(err)
	}
	if list := text(t, tab, "passkeys"); !strings.Contains(list, "laptop") {
		t.Fatalf("the passkey is not listed:\n%s", list)
	}
	a, _ := s.auth.Account(ctx, "owner@example.com")
	if keys, _ := s.auth.Passkeys(ctx, a.ID); len(keys) != 1 || keys[0].Name != "laptop" {
		t.Fatalf("stored passkeys: %+v", keys)
	}

	t.Run("without a password", func(t *testing.T) {
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("passkey-signin")),
			chromedp.Click(chromedp.ID("passkey-signin")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("as the second step", func(t *testing.T) {
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.SendKeys(chromedp.ID("email"), "owner@example.com"), chromedp.SendKeys(chromedp.ID("password"), testPassword),
			chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("passkey-second")),
			chromedp.Click(chromedp.ID("passkey-second")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
			t.Fatal(err)
		}
	})
}
