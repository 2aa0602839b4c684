package auth_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"moat/internal/auth"
	"moat/internal/auth/passkeytest"
)

// addPasskey adds key's passkey to the account signed in as in.
func (r *rig) addPasskey(in auth.SignedIn, key *passkeytest.Authenticator, name string) (auth.Passkey, error) {
	r.t.Helper()
	opts, err := r.BeginPasskey(ctx, in.Token)
	if err != nil {
		r.t.Fatal(err)
	}
	j, _ := json.Marshal(opts)
	answer, err := key.Create(j)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.FinishPasskey(ctx, auth.Actor{Who: in.Account.Email}, in.Token, name, answer)
}

func TestPasskeyChallengeExpires(t *testing.T) {
	r := newRig(t, cheap)
	r.account("owner@example.com", auth.RoleAdmin)
	in := r.signIn(home, "owner@example.com")
	key := passkeytest.New("https://moat.example.com")
	opts, err := r.BeginPasskey(ctx, in.Token)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(opts)
	answer, err := key.Create(j)
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(auth.CeremonyTTL + time.Second)
	if _, err := r.FinishPasskey(ctx, root, in.Token, "late", answer); !errors.Is(err, auth.ErrCeremony) {
		t.Errorf("an answer after %v: %v", auth.CeremonyTTL, err)
	}
	if keys, _ := r.Passkeys(ctx, in.Account.ID); len(keys) != 0 {
		t.Errorf("a late answer added %+v", keys)
	}
}

// TestResetMFARemovesPasskeys: the owner who lost a phone gets back in
// with email codes, and the lost phone's passkey signs in no more.
func TestResetMFARemovesPasskeys(t *testing.T) {
	r := newRig(t, cheap)
	a := r.account("owner@example.com", auth.RoleAdmin)
	in := r.signIn(home, "owner@example.com")
	key := passkeytest.New("https://moat.example.com")
	if _, err := r.addPasskey(in, key, "phone"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := r.Passkeys(ctx, a.ID); len(keys) != 1 {
		t.Fatalf("passkeys: %+v", keys)
	}
	if err := r.ResetMFA(ctx, root, a.ID); err != nil {
		t.Fatal(err)
	}
	if keys, _ := r.Passkeys(ctx, a.ID); len(keys) != 0 {
		t.Errorf("after reset-mfa: %+v", keys)
	}
	opts, tok, err := r.BeginPasswordless(ctx, home)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(opts)
	answer, err := key.Get(j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Passwordless(ctx, home, tok, answer); !errors.Is(err, auth.ErrPasskey) {
		t.Errorf("the lost phone's passkey after reset-mfa: %v", err)
	}
}

// FuzzPasswordless: whatever a browser sends as a passkey's answer, it is
// refused as a passkey (never a crash, never a sign-in).
func FuzzPasswordless(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"AA","rawId":"AA","type":"public-key","response":{"authenticatorData":"AA","clientDataJSON":"e30","signature":"AA","userHandle":"AAAAAAAAAAE"}}`))
	f.Add([]byte(`{"id":"AA","type":"public-key","response":{"clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0"}}`))
	r := newRig(f, cheap)
	f.Fuzz(func(t *testing.T, answer []byte) {
		r.clock.Add(time.Second) // a sign-in a second stays under the limit
		_, tok, err := r.BeginPasswordless(ctx, home)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Passwordless(ctx, home, tok, answer); !errors.Is(err, auth.ErrPasskey) {
			t.Fatalf("answer %q: %v", answer, err)
		}
	})
}
