package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"moat/internal/secret"
)

// TOTP as every authenticator app reads it: SHA-1, 6 digits, 30 seconds,
// and the codes of the step before and after accepted for clocks that
// drift.
var totpOpts = totp.ValidateOpts{Period: 30, Skew: 0, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

const totpPeriod = 30

// RecoveryCodeCount is how many recovery codes an account gets.
const RecoveryCodeCount = 10

// codeHash binds an email code to its session, so that a code read from
// one session's mail is no good in another.
func codeHash(session, code string) string { return hashSecret(session + ":" + code) }

// sendCode makes a new email code for a session and mails it.
func (s *Service) sendCode(ctx context.Context, c Client, sess Session, a Account) error {
	code, err := digits(6)
	if err != nil {
		return err
	}
	if err := s.o.Store.SetEmailCode(ctx, sess.Hash, EmailCode{Hash: codeHash(sess.Hash, code), Expires: s.now().Add(CodeTTL)}); err != nil {
		return err
	}
	if s.o.Mail == nil {
		return refuse("moat cannot send mail, so it cannot send the sign-in code: set up mail (moat mail) or sign in with another factor")
	}
	body := fmt.Sprintf("Your moat code is %s\n\nIt is good for 10 minutes, once. It was asked for by a sign-in from %s (%s).\nIf that was not you, someone knows your password: change it.\n", code, addrString(c.Addr), c.Agent)
	if err := s.o.Mail(ctx, a.Email, "Your moat code: "+code, body); err != nil {
		return fmt.Errorf("send the sign-in code to %s: %w", a.Email, err)
	}
	return nil
}

// RequestCode mails an email code for a StageFull session, to prove the
// person is still there before a change of second factor.
func (s *Service) RequestCode(ctx context.Context, c Client, token string) error {
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return err
	}
	return s.sendCode(ctx, c, sess, a)
}

// digits returns n random decimal digits, each uniform.
func digits(n int) (string, error) {
	var b strings.Builder
	var buf [4]byte
	for b.Len() < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("auth: random: %w", err)
		}
		v := binary.BigEndian.Uint32(buf[:])
		if v >= 4_000_000_000 { // a multiple of 10 below 2³², so no digit is likelier
			continue
		}
		b.WriteByte('0' + byte(v%10))
	}
	return b.String(), nil
}

// checkFactor checks a second factor of an account, spending what it
// uses: an email code, a TOTP step, a recovery code, a passkey challenge.
func (s *Service) checkFactor(ctx context.Context, sess Session, a Account, f Factor, code string) error {
	code = strings.TrimSpace(code)
	switch f {
	case FactorEmail:
		c, ok, err := s.o.Store.TryEmailCode(ctx, sess.Hash)
		if err != nil {
			return err
		}
		if !ok {
			return ErrCodeDead
		}
		if !secret.Equal(codeHash(sess.Hash, code), c.Hash) || s.now().After(c.Expires) {
			return ErrCode
		}
		return s.o.Store.DropEmailCode(ctx, sess.Hash)
	case FactorTOTP:
		if a.MFA != MethodTOTP {
			return refuse("%s has no authenticator app set up", a.Email)
		}
		key, err := s.o.Sealer.Open(a.TOTP, totpLabel(a.ID))
		if err != nil {
			return err
		}
		step, ok := s.totpStep(string(key), code)
		if !ok {
			return ErrCode
		}
		fresh, err := s.o.Store.UseTOTPStep(ctx, a.ID, step)
		if err != nil {
			return err
		}
		if !fresh {
			return ErrCodeUsed
		}
		return nil
	case FactorRecovery:
		ok, err := s.o.Store.UseRecoveryCode(ctx, a.ID, hashSecret(normRecovery(code)))
		if err != nil {
			return err
		}
		if !ok {
			return ErrCode
		}
		left, err := s.o.Store.RecoveryCodes(ctx, a.ID)
		if err == nil {
			s.record(ctx, Actor{Who: a.Email, From: sess.Addr}, "mfa.recovery_used", a.Email, fmt.Sprintf("%d recovery codes left", left))
			s.mail(ctx, a.Email, "A moat recovery code was used", fmt.Sprintf("A recovery code of %s was used to sign in from %s. %d are left; make new ones on the Account page.\n", a.Email, sess.Addr, left))
		}
		return nil
	case FactorPasskey:
		return s.checkPasskey(ctx, sess, a, code)
	}
	return refuse("%q is not a second factor: use email, totp, recovery or passkey", f)
}

// totpStep returns the time step whose code is code, within a step of
// now, comparing each in constant time.
func (s *Service) totpStep(key, code string) (int64, bool) {
	now := s.now()
	var (
		found int64
		ok    bool
	)
	for d := int64(-1); d <= 1; d++ {
		t := now.Add(time.Duration(d) * totpPeriod * time.Second)
		want, err := totp.GenerateCodeCustom(key, t, totpOpts)
		if err == nil && secret.Equal(want, code) {
			found, ok = t.Unix()/totpPeriod, true
		}
	}
	return found, ok
}

func totpLabel(id int64) []byte { return fmt.Appendf(nil, "moat totp account %d", id) }

// Enrolment is a TOTP secret waiting for its first code.
type Enrolment struct {
	// Secret is the base32 text to type into an authenticator app; URL
	// the otpauth:// link the QR code holds.
	Secret, URL string
	// QR is the link as a PNG image, drawn here.
	QR []byte
}

// BeginTOTP makes a new authenticator secret for an account. Nothing
// changes until ConfirmTOTP sees a code from it.
func (s *Service) BeginTOTP(ctx context.Context, id int64) (Enrolment, error) {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return Enrolment{}, err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: s.issuer(), AccountName: a.Email, Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Enrolment{}, fmt.Errorf("auth: TOTP secret: %w", err)
	}
	img, err := key.Image(256, 256)
	if err != nil {
		return Enrolment{}, fmt.Errorf("auth: QR code: %w", err)
	}
	var qr bytes.Buffer
	if err := png.Encode(&qr, img); err != nil {
		return Enrolment{}, fmt.Errorf("auth: QR code: %w", err)
	}
	sealed, err := s.o.Sealer.Seal([]byte(key.Secret()), totpLabel(a.ID))
	if err != nil {
		return Enrolment{}, err
	}
	if err := s.o.Store.SetMFA(ctx, a.ID, a.MFA, a.TOTP, sealed); err != nil {
		return Enrolment{}, err
	}
	return Enrolment{Secret: key.Secret(), URL: key.URL(), QR: qr.Bytes()}, nil
}

func (s *Service) issuer() string {
	if s.o.Issuer != "" {
		return s.o.Issuer
	}
	return "moat"
}

// ConfirmTOTP makes the secret of BeginTOTP the account's second factor
// once a code from it is right, and returns new recovery codes when the
// account has none.
func (s *Service) ConfirmTOTP(ctx context.Context, by Actor, id int64, code string) ([]string, error) {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.TOTPPending == nil {
		return nil, refuse("no authenticator app is being set up: start again")
	}
	key, err := s.o.Sealer.Open(a.TOTPPending, totpLabel(a.ID))
	if err != nil {
		return nil, err
	}
	step, ok := s.totpStep(string(key), strings.TrimSpace(code))
	if !ok {
		return nil, fmt.Errorf("%w: type the 6 digits the app shows now (check the phone's clock)", ErrCode)
	}
	if err := s.o.Store.SetMFA(ctx, a.ID, MethodTOTP, a.TOTPPending, nil); err != nil {
		return nil, err
	}
	if _, err := s.o.Store.UseTOTPStep(ctx, a.ID, step); err != nil {
		return nil, err
	}
	s.mfaChanged(ctx, by, a, "mfa.totp", "authenticator app set up as the second factor (was "+string(a.MFA)+")")
	if n, err := s.o.Store.RecoveryCodes(ctx, a.ID); err != nil || n > 0 {
		return nil, err
	}
	return s.NewRecoveryCodes(ctx, by, a.ID)
}

// NewRecoveryCodes makes an account's recovery codes, shown once: the old
// ones stop working.
func (s *Service) NewRecoveryCodes(ctx context.Context, by Actor, id int64) ([]string, error) {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return nil, err
	}
	codes := make([]string, RecoveryCodeCount)
	hashes := make([]string, RecoveryCodeCount)
	for i := range codes {
		raw, err := secret.Password(10) // 80 bits, 16 characters
		if err != nil {
			return nil, err
		}
		codes[i] = raw[:4] + "-" + raw[4:8] + "-" + raw[8:12] + "-" + raw[12:16]
		hashes[i] = hashSecret(normRecovery(codes[i]))
	}
	if err := s.o.Store.SetRecoveryCodes(ctx, a.ID, hashes); err != nil {
		return nil, err
	}
	s.mfaChanged(ctx, by, a, "mfa.recovery_codes", fmt.Sprintf("%d new recovery codes; the old ones no longer work", RecoveryCodeCount))
	return codes, nil
}

// normRecovery is a recovery code as compared: without dashes, spaces
// or case, as a person may type it.
func normRecovery(code string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToLower(code))
}

// DisableMFA turns the second factor off. It takes the word "disable"
// typed out and a fresh second factor, so that neither a slip nor a
// stolen session is enough.
func (s *Service) DisableMFA(ctx context.Context, c Client, by Actor, token, typed string, f Factor, code string) error {
	if strings.TrimSpace(typed) != "disable" {
		return errors.New(`type the word disable to turn the second factor off`)
	}
	sess, a, err := s.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	if err := s.regulate(c, a.Email); err != nil {
		return err
	}
	if err := s.checkFactor(ctx, sess, a, f, code); err != nil {
		s.record(ctx, by, "mfa.disable_failed", a.Email, string(f)+": "+err.Error())
		return err
	}
	if err := s.o.Store.SetMFA(ctx, a.ID, MethodOff, nil, nil); err != nil {
		return err
	}
	s.mfaChanged(ctx, by, a, "mfa.off", "second factor turned off (was "+string(a.MFA)+")")
	return nil
}

// UseEmailCodes makes the email code an account's second factor again.
func (s *Service) UseEmailCodes(ctx context.Context, by Actor, id int64) error {
	a, err := s.o.Store.Account(ctx, id)
	if err != nil {
		return err
	}
	if err := s.o.Store.SetMFA(ctx, a.ID, MethodEmail, nil, nil); err != nil {
		return err
	}
	s.mfaChanged(ctx, by, a, "mfa.email", "email codes as the second factor (was "+string(a.MFA)+")")
	return nil
}

// ResetMFA is the way back for an owner who lost their second factor:
// root on the box only. The account is back on email codes; its recovery
// codes, passkeys (the lost phone may hold one) and sessions are gone.
func (s *Service) ResetMFA(ctx context.Context, by Actor, id int64) error {
	if err := s.UseEmailCodes(ctx, by, id); err != nil {
		return err
	}
	if err := s.o.Store.SetRecoveryCodes(ctx, id, nil); err != nil {
		return err
	}
	if err := s.removePasskeys(ctx, id); err != nil {
		return err
	}
	_, err := s.o.Store.RemoveSessions(ctx, id, "")
	return err
}

// mfaChanged records a change of second factor and tells the account.
func (s *Service) mfaChanged(ctx context.Context, by Actor, a Account, action, detail string) {
	s.record(ctx, by, action, a.Email, detail)
	s.mail(ctx, a.Email, "Your moat sign-in changed", fmt.Sprintf("%s: %s.\nChanged by %s from %s at %s.\n\nIf this was not you, ask the server's owner to run: moat user reset-mfa %s\n",
		a.Email, detail, by.Who, by.From, s.now().UTC().Format(time.RFC1123), a.Email))
}
