package api

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"moat/internal/auth"
	"moat/internal/auth/passkeytest"
	"moat/internal/store"
)

// passkeyOrigin is the admin host as the test's browser claims to be on
// it: the server behind it is the test's, on loopback.
const passkeyOrigin = "https://admin.example.com"

// mailed reports whether a mail to email says what.
func (rg *remoteRig) mailed(email, what string) bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return slices.ContainsFunc(rg.mails, func(m string) bool { return strings.HasPrefix(m, email+"\n") && strings.Contains(m, what) })
}

// logged reports whether the activity log has action about target.
func (rg *remoteRig) logged(action, target string) bool {
	rg.t.Helper()
	list, err := rg.st.Activity(context.Background(), store.Query{Target: target})
	if err != nil {
		rg.t.Fatal(err)
	}
	return slices.ContainsFunc(list, func(e store.Entry) bool { return e.Action == action })
}

// answer is the authenticator's answer to the options of a reply.
func answer(t *testing.T, r reply, sign func([]byte) ([]byte, error)) json.RawMessage {
	t.Helper()
	out, err := sign(r.body)
	if err != nil {
		t.Fatalf("authenticator: %v (options %s)", err, r.body)
	}
	return out
}

func TestRemotePasskeys(t *testing.T) {
	rg := newRemote(t)
	const owner = "owner@example.com"
	rg.account(owner, auth.RoleAdmin)
	b := rg.browser()
	b.signIn(owner)
	key := passkeytest.New(passkeyOrigin)

	// Adding one: the options, the device's answer, a new session.
	opts := b.must(200, "POST", "/v1/me/passkeys", nil)
	cred := answer(t, opts, key.Create)
	b.must(400, "POST", "/v1/me/passkeys/finish", PasskeyRequest{Name: "", Credential: cred})
	opts = b.must(200, "POST", "/v1/me/passkeys", nil)
	cred = answer(t, opts, key.Create)
	stale := b.c.Jar.Cookies(mustURL(t, rg.srv.URL))
	var added NewPasskey
	b.must(201, "POST", "/v1/me/passkeys/finish", PasskeyRequest{Name: "laptop", Credential: cred}).decode(t, &added)
	if added.Passkey.Name != "laptop" || added.Passkey.ID != auth.PasskeyID(key.ID) || added.CSRF == "" || added.CSRF == b.csrf {
		t.Fatalf("added: %+v", added)
	}
	b.csrf = added.CSRF
	old := rg.browser()
	old.c.Jar.SetCookies(mustURL(t, rg.srv.URL), stale)
	old.must(401, "GET", "/v1/me", nil)
	if !rg.mailed(owner, `passkey "laptop" added`) || !rg.logged("mfa.passkey_added", owner) {
		t.Errorf("the new passkey was not mailed or logged: %q", rg.mails)
	}
	// The same answer again is no good: its challenge is spent (the
	// session is still good, so it is not a 401).
	b.must(400, "POST", "/v1/me/passkeys/finish", PasskeyRequest{Name: "again", Credential: cred})
	var list []PasskeyInfo
	b.must(200, "GET", "/v1/me/passkeys", nil).decode(t, &list)
	if len(list) != 1 || list[0].Name != "laptop" || list[0].LastUsed != nil || list[0].AAGUID != "00000000-0000-0000-0000-000000000000" || list[0].BackedUp {
		t.Fatalf("passkeys: %+v", list)
	}

	// As the second factor after the password.
	second := rg.browser()
	var in SignInResponse
	second.must(200, "POST", "/v1/auth/signin", SignInRequest{owner, testPassword}).decode(t, &in)
	if !slices.Contains(in.Needs, auth.FactorPasskey) {
		t.Fatalf("after the password, needs %v", in.Needs)
	}
	assertion := answer(t, second.must(200, "POST", "/v1/auth/second/passkey", nil), key.Get)
	second.must(200, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorPasskey, Credential: assertion}).decode(t, &in)
	if in.Stage != auth.StageFull {
		t.Fatalf("after the passkey: %+v", in)
	}
	// An answer is good for its own challenge only.
	replay := rg.browser()
	replay.must(200, "POST", "/v1/auth/signin", SignInRequest{owner, testPassword})
	replay.must(200, "POST", "/v1/auth/second/passkey", nil)
	replay.must(401, "POST", "/v1/auth/second", SecondRequest{Factor: auth.FactorPasskey, Credential: assertion})

	// Alone, with no password.
	alone := rg.browser()
	opts = alone.must(200, "POST", "/v1/auth/passkey", nil)
	var full SignInResponse
	alone.must(200, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, key.Get))).decode(t, &full)
	if full.Stage != auth.StageFull || full.Account == nil || full.Account.Email != owner {
		t.Fatalf("passwordless: %+v", full)
	}
	alone.csrf = full.CSRF
	alone.must(200, "GET", "/v1/me", nil)
	b.must(200, "GET", "/v1/me/passkeys", nil).decode(t, &list)
	if len(list) != 1 || list[0].LastUsed == nil {
		t.Errorf("passkeys after use: %+v", list)
	}
	// No challenge cookie, no sign-in.
	bare := rg.browser()
	bare.must(401, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, key.Get)))

	// A look-alike site gets an answer signed for its own origin, which
	// is refused, and counted against its address for the guard.
	phish := *key
	phish.Origin = "https://admin.example.com.evil.test"
	evil := rg.browser()
	evil.from = "192.0.2.66"
	opts = evil.must(200, "POST", "/v1/auth/passkey", nil)
	evil.must(401, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, phish.Get)))
	rg.mu.Lock()
	banned := slices.Contains(rg.fails, netip.MustParseAddr("192.0.2.66"))
	rg.mu.Unlock()
	if !banned {
		t.Error("a refused passkey is not an event for the guard")
	}

	// A key whose counter goes back has been copied: refused from then on.
	copied := rg.browser()
	copied.from = "192.0.2.10" // the sign-ins above used up 127.0.0.1's 10 a second
	key.Count = 1
	opts = copied.must(200, "POST", "/v1/auth/passkey", nil)
	copied.must(401, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, key.Get)))
	key.Count = 100
	opts = copied.must(200, "POST", "/v1/auth/passkey", nil)
	copied.must(401, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, key.Get)))
	b.must(200, "GET", "/v1/me/passkeys", nil).decode(t, &list)
	if len(list) != 1 || !list[0].CloneWarning || !rg.mailed(owner, "two copies of its key may exist") {
		t.Errorf("after a counter went back: %+v", list)
	}

	// Removed, it signs in no more; removing it again is a 404.
	b.must(404, "DELETE", "/v1/me/passkeys/"+auth.PasskeyID([]byte("nope")), nil)
	b.must(400, "DELETE", "/v1/me/passkeys/not!base64", nil)
	b.must(200, "DELETE", "/v1/me/passkeys/"+list[0].ID, nil)
	if !rg.logged("mfa.passkey_removed", owner) || !rg.mailed(owner, `passkey "laptop" removed`) {
		t.Error("the removal was not logged or mailed")
	}
	key.Count = 200
	gone := rg.browser()
	gone.from = "192.0.2.11"
	opts = gone.must(200, "POST", "/v1/auth/passkey", nil)
	gone.must(401, "POST", "/v1/auth/passkey/finish", json.RawMessage(answer(t, opts, key.Get)))
	b.must(404, "DELETE", "/v1/me/passkeys/"+list[0].ID, nil)

	// A token cannot add passkeys.
	var tok NewToken
	b.must(201, "POST", "/v1/me/tokens", TokenRequest{Name: "ci", Scope: auth.ScopeAdmin}).decode(t, &tok)
	script := rg.browser()
	script.bearer = tok.Token
	script.must(403, "POST", "/v1/me/passkeys", nil)
}
