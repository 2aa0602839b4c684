package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"moat/internal/config"
)

// Passkeys: WebAuthn credentials, as the second factor after a password
// or alone (a passkey proves both what the person has and, with the
// device's PIN or fingerprint, who they are). A passkey is bound to the
// admin host, so a look-alike site cannot use it: that is what makes it
// stronger than any code a person can be tricked into typing.

// FactorPasskey finishes a sign-in with a passkey.
const FactorPasskey Factor = "passkey"

// CeremonyTTL is how long a passkey challenge is good for.
const CeremonyTTL = 5 * time.Minute

// MaxPasskeys is how many passkeys one account may have.
const MaxPasskeys = 20

// ErrPasskey is a passkey that did not prove the account: a wrong
// signature, another site's, an unknown key. It says no more.
var ErrPasskey = errors.New("the passkey was not accepted: try again, or sign in another way")

// ErrCeremony is a passkey answer with no challenge waiting for it.
var ErrCeremony = errors.New("no passkey challenge is waiting, or it has expired: start again")

// RelyingParty is the site passkeys are made for: the admin host.
type RelyingParty struct {
	// ID is the admin host's name; a passkey made for it works nowhere
	// else.
	ID string
	// Origins are the URLs a browser signs in at: https://ID, with the
	// port when the edge's is not 443.
	Origins []string
}

// webAuthn is the WebAuthn relying party of the admin host as it is set
// now.
func (s *Service) webAuthn() (*webauthn.WebAuthn, error) {
	var rp RelyingParty
	if s.o.RelyingParty != nil {
		rp = s.o.RelyingParty()
	}
	if rp.ID == "" || len(rp.Origins) == 0 {
		return nil, refuse("passkeys need the admin host: set server.admin_domain (or server.domain)")
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          rp.ID,
		RPDisplayName: s.issuer(),
		RPOrigins:     rp.Origins,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementPreferred,
			UserVerification: protocol.VerificationPreferred,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: passkeys for %s: %w", rp.ID, err)
	}
	return wa, nil
}

// passkeyUser is an account as the WebAuthn library sees it. Its user
// handle is the account's number, which says nothing about the person.
type passkeyUser struct {
	a    Account
	keys []Passkey
}

func (u passkeyUser) WebAuthnID() []byte   { return userHandle(u.a.ID) }
func (u passkeyUser) WebAuthnName() string { return u.a.Email }
func (u passkeyUser) WebAuthnDisplayName() string {
	if u.a.Name != "" {
		return u.a.Name
	}
	return u.a.Email
}

func (u passkeyUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(u.keys))
	for i, p := range u.keys {
		out[i] = credentialOf(p)
	}
	return out
}

func userHandle(id int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

func credentialOf(p Passkey) webauthn.Credential {
	ts := make([]protocol.AuthenticatorTransport, len(p.Transports))
	for i, t := range p.Transports {
		ts[i] = protocol.AuthenticatorTransport(t)
	}
	return webauthn.Credential{
		ID: p.ID, PublicKey: p.PublicKey, Transport: ts,
		AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat,
		Flags:         webauthn.NewCredentialFlags(protocol.AuthenticatorFlags(p.Flags)),
		Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount, CloneWarning: p.CloneWarning},
	}
}

// ceremony is what a challenge was made for, kept until its answer.
type ceremony struct {
	Account int64                `json:"account"`
	Data    webauthn.SessionData `json:"data"`
}

// The owners of ceremonies: a session's, or a passwordless sign-in's
// cookie.
func registerOwner(session string) string { return "register:" + session }
func assertOwner(session string) string   { return "assert:" + session }
func passwordlessOwner(token string) string {
	return "passwordless:" + hashSecret(token)
}

func (s *Service) putCeremony(ctx context.Context, owner string, account int64, data *webauthn.SessionData) error {
	b, err := json.Marshal(ceremony{Account: account, Data: *data})
	if err != nil {
		return fmt.Errorf("auth: passkey challenge: %w", err)
	}
	return s.o.Store.PutCeremony(ctx, owner, b, s.now().Add(CeremonyTTL))
}

func (s *Service) takeCeremony(ctx context.Context, owner string) (ceremony, error) {
	b, err := s.o.Store.TakeCeremony(ctx, owner, s.now())
	if errors.Is(err, ErrNotFound) {
		return ceremony{}, ErrCeremony
	}
	if err != nil {
		return ceremony{}, err
	}
	var c ceremony
	if err := json.Unmarshal(b, &c); err != nil {
		return ceremony{}, fmt.Errorf("auth: passkey challenge: %w", err)
	}
	return c, nil
}

// BackedUp reports whether a passkey is synced by its platform (a
// password manager, iCloud Keychain), as its last use said.
func (p Passkey) BackedUp() bool {
	return protocol.AuthenticatorFlags(p.Flags).HasBackupState()
}

// PasskeyID is a passkey's credential ID as the API writes it.
func PasskeyID(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// BeginPasskey starts adding a passkey to the account signed in with
// token: the options go to navigator.credentials.create().
func (s *Service) BeginPasskey(ctx context.Context, token string) (*protocol.CredentialCreation, error) {
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return nil, err
	}
	wa, err := s.webAuthn()
	if err != nil {
		return nil, err
	}
	keys, err := s.o.Store.Passkeys(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	if len(keys) >= MaxPasskeys {
		return nil, refuse("%s has %d passkeys, the most an account may have: remove one first", a.Email, len(keys))
	}
	u := passkeyUser{a, keys}
	creation, data, err := wa.BeginRegistration(u, webauthn.WithExclusions(webauthn.Credentials(u.WebAuthnCredentials()).CredentialDescriptors()))
	if err != nil {
		return nil, fmt.Errorf("auth: passkey challenge: %w", err)
	}
	if err := s.putCeremony(ctx, registerOwner(sess.Hash), a.ID, data); err != nil {
		return nil, err
	}
	return creation, nil
}

// FinishPasskey adds the passkey of a navigator.credentials.create()
// answer (its JSON) to the account signed in with token, under a name.
func (s *Service) FinishPasskey(ctx context.Context, by Actor, token, name string, answer []byte) (Passkey, error) {
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return Passkey{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > 64 {
		return Passkey{}, &config.FieldError{Field: "name", Value: name, Problem: "must be 1 to 64 characters", Fix: "name the passkey after the device that holds it, such as \"work laptop\""}
	}
	c, err := s.takeCeremony(ctx, registerOwner(sess.Hash))
	if errors.Is(err, ErrCeremony) {
		return Passkey{}, &Refusal{err} // the session is good: not a 401
	}
	if err != nil {
		return Passkey{}, err
	}
	wa, err := s.webAuthn()
	if err != nil {
		return Passkey{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(answer)
	if err != nil {
		return Passkey{}, refuse("the passkey's answer cannot be read: %s", protocolDetail(err))
	}
	keys, err := s.o.Store.Passkeys(ctx, a.ID)
	if err != nil {
		return Passkey{}, err
	}
	for _, k := range keys {
		if strings.EqualFold(k.Name, name) {
			return Passkey{}, &config.FieldError{Field: "name", Value: name, Problem: "is the name of another passkey of " + a.Email, Fix: "choose another name"}
		}
	}
	cred, err := wa.CreateCredential(passkeyUser{a, keys}, c.Data, parsed)
	if err != nil {
		return Passkey{}, refuse("the passkey was not added: %s", protocolDetail(err))
	}
	ts := make([]string, len(cred.Transport))
	for i, t := range cred.Transport {
		ts[i] = string(t)
	}
	p := Passkey{
		ID: cred.ID, Account: a.ID, Name: name, PublicKey: cred.PublicKey,
		SignCount: cred.Authenticator.SignCount, AAGUID: cred.Authenticator.AAGUID, Transports: ts,
		Flags: byte(cred.Flags.ProtocolValue()), AttestationType: cred.AttestationType, AttestationFormat: cred.AttestationFormat,
		Created: s.now(),
	}
	if err := s.o.Store.AddPasskey(ctx, p); err != nil {
		if errors.Is(err, ErrExists) {
			return Passkey{}, refuse("this passkey is added already")
		}
		return Passkey{}, err
	}
	s.mfaChanged(ctx, by, a, "mfa.passkey_added", fmt.Sprintf("passkey %q added", name))
	return p, nil
}

// protocolDetail is what a WebAuthn error says, without the library's
// developer notes.
func protocolDetail(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Details != "" {
		return pe.Details
	}
	return err.Error()
}

// Passkeys lists an account's passkeys.
func (s *Service) Passkeys(ctx context.Context, account int64) ([]Passkey, error) {
	return s.o.Store.Passkeys(ctx, account)
}

// RemovePasskey removes a passkey (by PasskeyID) of an account.
func (s *Service) RemovePasskey(ctx context.Context, by Actor, account int64, id string) error {
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) == 0 {
		return &config.FieldError{Field: "id", Value: id, Problem: "is not a passkey ID", Fix: "take the id from GET /v1/me/passkeys"}
	}
	a, err := s.o.Store.Account(ctx, account)
	if err != nil {
		return err
	}
	keys, err := s.o.Store.Passkeys(ctx, account)
	if err != nil {
		return err
	}
	name := ""
	for _, k := range keys {
		if bytes.Equal(k.ID, raw) {
			name = k.Name
		}
	}
	if err := s.o.Store.RemovePasskey(ctx, account, raw); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%s has no passkey %s: %w", a.Email, id, ErrNotFound)
		}
		return err
	}
	s.mfaChanged(ctx, by, a, "mfa.passkey_removed", fmt.Sprintf("passkey %q removed", name))
	return nil
}

// BeginPasskeySecond makes the challenge for a passkey as the second
// factor of the sign-in of token (a StagePassword session); the answer
// goes to Second with FactorPasskey.
func (s *Service) BeginPasskeySecond(ctx context.Context, c Client, token string) (*protocol.CredentialAssertion, error) {
	sess, a, err := s.pending(ctx, token)
	if err != nil {
		return nil, err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return nil, err
	}
	keys, err := s.o.Store.Passkeys(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, refuse("%s has no passkey: finish with another factor", a.Email)
	}
	wa, err := s.webAuthn()
	if err != nil {
		return nil, err
	}
	assertion, data, err := wa.BeginLogin(passkeyUser{a, keys})
	if err != nil {
		return nil, fmt.Errorf("auth: passkey challenge: %w", err)
	}
	if err := s.putCeremony(ctx, assertOwner(sess.Hash), a.ID, data); err != nil {
		return nil, err
	}
	return assertion, nil
}

// checkPasskey checks the answer to the passkey challenge of a session's
// sign-in.
func (s *Service) checkPasskey(ctx context.Context, sess Session, a Account, answer string) error {
	c, err := s.takeCeremony(ctx, assertOwner(sess.Hash))
	if err != nil {
		return err
	}
	if c.Account != a.ID {
		return ErrPasskey
	}
	wa, err := s.webAuthn()
	if err != nil {
		return err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(answer))
	if err != nil {
		return fmt.Errorf("%w (%s)", ErrPasskey, protocolDetail(err))
	}
	keys, err := s.o.Store.Passkeys(ctx, a.ID)
	if err != nil {
		return err
	}
	cred, err := wa.ValidateLogin(passkeyUser{a, keys}, c.Data, parsed)
	if err != nil {
		return fmt.Errorf("%w (%s)", ErrPasskey, protocolDetail(err))
	}
	return s.usedPasskey(ctx, a, keys, cred, sess.Addr)
}

// usedPasskey records a passkey's use, and refuses one whose signature
// counter went backwards: its key may have been copied.
func (s *Service) usedPasskey(ctx context.Context, a Account, keys []Passkey, cred *webauthn.Credential, from string) error {
	var p Passkey
	for _, k := range keys {
		if bytes.Equal(k.ID, cred.ID) {
			p = k
		}
	}
	if p.ID == nil {
		return ErrPasskey
	}
	warned := p.CloneWarning
	p.SignCount, p.Flags, p.CloneWarning = cred.Authenticator.SignCount, byte(cred.Flags.ProtocolValue()), cred.Authenticator.CloneWarning
	p.LastUsed = s.now()
	if err := s.o.Store.UsePasskey(ctx, p); err != nil {
		return err
	}
	if p.CloneWarning {
		if !warned {
			s.record(ctx, Actor{Who: a.Email, From: from}, "mfa.passkey_cloned", a.Email, fmt.Sprintf("passkey %q: its signature counter went backwards; it is refused from now on", p.Name))
			s.mail(ctx, a.Email, "A moat passkey may have been copied", fmt.Sprintf("The passkey %q of %s signed a sign-in from %s with a counter lower than before, so two copies of its key may exist. moat refuses it from now on: remove it on the Account page and add the device again.\n", p.Name, a.Email, from))
		}
		return fmt.Errorf("%w: the passkey %q may have been copied (its counter went backwards); remove it and add it again", ErrPasskey, p.Name)
	}
	return nil
}

// BeginPasswordless makes the challenge of a sign-in with a passkey
// alone. The ceremony token it returns anchors the challenge to the
// browser (a cookie) and goes back with the answer to Passwordless.
func (s *Service) BeginPasswordless(ctx context.Context, c Client) (*protocol.CredentialAssertion, string, error) {
	if err := s.regulate(c, ""); err != nil {
		return nil, "", err
	}
	wa, err := s.webAuthn()
	if err != nil {
		return nil, "", err
	}
	assertion, data, err := wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, "", fmt.Errorf("auth: passkey challenge: %w", err)
	}
	tok, _, err := newSecret("")
	if err != nil {
		return nil, "", err
	}
	if err := s.putCeremony(ctx, passwordlessOwner(tok), 0, data); err != nil {
		return nil, "", err
	}
	return assertion, tok, nil
}

// Passwordless signs in with a passkey alone: the device verified its
// owner (PIN, fingerprint), so the session is StageFull at once.
func (s *Service) Passwordless(ctx context.Context, c Client, ceremonyToken string, answer []byte) (SignedIn, error) {
	if err := s.regulate(c, ""); err != nil {
		return SignedIn{}, err
	}
	cer, err := s.takeCeremony(ctx, passwordlessOwner(ceremonyToken))
	if err != nil {
		return SignedIn{}, err
	}
	wa, err := s.webAuthn()
	if err != nil {
		return SignedIn{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(answer)
	if err != nil {
		s.fail(ctx, c, "", "login.passkey_failed", protocolDetail(err))
		return SignedIn{}, fmt.Errorf("%w (%s)", ErrPasskey, protocolDetail(err))
	}
	var (
		a    Account
		keys []Passkey
	)
	find := func(_, handle []byte) (webauthn.User, error) {
		if len(handle) != 8 {
			return nil, errors.New("not a moat account")
		}
		var err error
		if a, err = s.o.Store.Account(ctx, int64(binary.BigEndian.Uint64(handle))); err != nil {
			return nil, err
		}
		if keys, err = s.o.Store.Passkeys(ctx, a.ID); err != nil {
			return nil, err
		}
		return passkeyUser{a, keys}, nil
	}
	_, cred, err := wa.ValidatePasskeyLogin(find, cer.Data, parsed)
	if err != nil {
		s.fail(ctx, c, a.Email, "login.passkey_failed", protocolDetail(err))
		return SignedIn{}, fmt.Errorf("%w (%s)", ErrPasskey, protocolDetail(err))
	}
	if err := s.usedPasskey(ctx, a, keys, cred, addrString(c.Addr)); err != nil {
		s.fail(ctx, c, a.Email, "login.passkey_failed", err.Error())
		return SignedIn{}, err
	}
	return s.finish(ctx, c, a, "", "passkey")
}

// removePasskeys removes every passkey of an account.
func (s *Service) removePasskeys(ctx context.Context, account int64) error {
	keys, err := s.o.Store.Passkeys(ctx, account)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.o.Store.RemovePasskey(ctx, account, k.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}
