// Package sshd is what moat does to OpenSSH: the public keys it manages by
// title, written to files of its own (one per user) that an sshd drop-in
// adds to AuthorizedKeysFile, never touching a user's own
// ~/.ssh/authorized_keys; and, later, sshd's hardening with the check
// that the owner keeps a way in.
//
// This file reads and checks keys: an authorized_keys line in, a Key or a
// refusal that says why and what to do out.
package sshd

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// Key is a public key as an authorized_keys line holds it.
type Key struct {
	// Options come before the key, like from="203.0.113.0/24" or
	// command="backup"; sshd enforces them, so they are kept and shown.
	Options []string `json:"options,omitempty"`
	// Type is the key's algorithm as OpenSSH names it, like ssh-ed25519.
	Type string `json:"type"`
	// Bits is the key's size: 256 for ed25519, the curve's for ECDSA, the
	// modulus's for RSA.
	Bits int `json:"bits"`
	// Fingerprint is SHA256:..., as ssh-keygen -l prints it.
	Fingerprint string `json:"fingerprint"`
	Comment     string `json:"comment,omitempty"`
	// Line is the key written the one way moat writes it: options, type,
	// key, comment.
	Line string `json:"line"`
}

// KeyError is a key refused: what is wrong, and the fix.
type KeyError struct {
	Problem, Fix string
	// Leaked is set when what was given is a private key: it must be
	// treated as known to others from now on.
	Leaked bool
}

func (e *KeyError) Error() string { return e.Problem + ": " + e.Fix }

// keyOptions are the options sshd takes in front of a key (sshd(8),
// AUTHORIZED_KEYS FILE FORMAT).
var keyOptions = []string{"agent-forwarding", "cert-authority", "command", "environment", "expiry-time", "from", "no-agent-forwarding",
	"no-port-forwarding", "no-pty", "no-touch-required", "no-user-rc", "no-x11-forwarding", "permitlisten", "permitopen",
	"port-forwarding", "principals", "pty", "restrict", "tunnel", "user-rc", "verify-required", "x11-forwarding"}

// The smallest RSA keys accepted, and those accepted without a warning.
const (
	minRSABits  = 2048
	goodRSABits = 3072
)

const fixNewKey = "make a new key with ssh-keygen -t ed25519 and add its .pub file"

// ParseKey reads one authorized_keys line and checks the key: ed25519,
// ECDSA, security keys (sk-*) and RSA of 3072 bits or more are accepted;
// RSA of 2048 bits is accepted with a warning; DSA, smaller RSA keys,
// certificates, malformed lines and private keys are refused with the
// reason. A private key is refused with a warning that it must now be
// treated as leaked.
func ParseKey(line string) (k Key, warning string, err error) {
	line = strings.TrimSpace(strings.TrimPrefix(line, "\ufeff"))
	switch {
	case line == "":
		return Key{}, "", &KeyError{Problem: "the key is empty", Fix: "give the contents of a .pub file, like ~/.ssh/id_ed25519.pub"}
	case isPrivate(line):
		return Key{}, "", &KeyError{
			Problem: "this is a PRIVATE key, which must never leave its computer",
			Fix:     "treat it as leaked: remove its public key wherever it is authorized, " + fixNewKey + " (the one ending in .pub)",
			Leaked:  true,
		}
	case strings.ContainsAny(line, "\r\n"):
		return Key{}, "", &KeyError{Problem: "there is more than one line", Fix: "add one key at a time, a single line like ssh-ed25519 AAAA... you@laptop"}
	case strings.ContainsFunc(line, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }):
		return Key{}, "", &KeyError{Problem: "the line holds control characters", Fix: "copy the key line again, as plain text, like ssh-ed25519 AAAA... you@laptop"}
	case strings.HasPrefix(line, "#"):
		return Key{}, "", &KeyError{Problem: "the line is a comment", Fix: "give the key line itself, like ssh-ed25519 AAAA... you@laptop"}
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		if strings.Contains(line, "ssh-dss ") {
			return Key{}, "", dsaRefused()
		}
		return Key{}, "", &KeyError{Problem: "the line is not a public key (" + err.Error() + ")", Fix: "give a line like ssh-ed25519 AAAA... you@laptop, as in a .pub file, with any options first"}
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return Key{}, "", &KeyError{Problem: "there is more than one key", Fix: "add one key at a time"}
	}
	for _, o := range options {
		name, _, _ := strings.Cut(o, "=")
		if !slices.Contains(keyOptions, strings.ToLower(name)) {
			// sshd refuses the whole line for an option it does not know.
			return Key{}, "", &KeyError{Problem: "the option " + strconv.Quote(name) + " is not one sshd knows, and sshd would ignore the whole key", Fix: "correct or remove it; sshd's options are " + strings.Join(keyOptions, ", ")}
		}
	}
	k = Key{Options: options, Type: pub.Type(), Fingerprint: ssh.FingerprintSHA256(pub), Comment: comment}
	if _, ok := pub.(*ssh.Certificate); ok {
		return Key{}, "", &KeyError{Problem: "this is a certificate, not a key", Fix: "authorize the key itself, or its CA with the cert-authority option"}
	}
	switch pub.Type() {
	case "ssh-dss":
		return Key{}, "", dsaRefused()
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519:
		k.Bits = 256
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoSKECDSA256:
		k.Bits = 256
	case ssh.KeyAlgoECDSA384:
		k.Bits = 384
	case ssh.KeyAlgoECDSA521:
		k.Bits = 521
	case ssh.KeyAlgoRSA:
		k.Bits = bits(pub)
		switch {
		case k.Bits < minRSABits:
			return Key{}, "", &KeyError{Problem: fmt.Sprintf("this RSA key has %d bits, which can be broken", k.Bits), Fix: fixNewKey}
		case k.Bits < goodRSABits:
			warning = fmt.Sprintf("this RSA key has %d bits: it is accepted, but %d or more (or ed25519) is recommended; %s", k.Bits, goodRSABits, fixNewKey)
		}
	default:
		return Key{}, "", &KeyError{Problem: "keys of type " + pub.Type() + " are not accepted", Fix: fixNewKey}
	}
	if k.Bits == 0 {
		k.Bits = bits(pub)
	}
	var parts []string
	if len(options) > 0 {
		parts = append(parts, strings.Join(options, ","))
	}
	parts = append(parts, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
	if comment != "" {
		parts = append(parts, comment)
	}
	k.Line = strings.Join(parts, " ")
	return k, warning, nil
}

func dsaRefused() error {
	return &KeyError{Problem: "DSA (ssh-dss) keys are broken, and OpenSSH no longer accepts them", Fix: fixNewKey}
}

// isPrivate reports whether s looks like a private key of any format: a
// PEM block of one, PuTTY's file, or the base64 of OpenSSH's
// ("openssh-key-v1"), as one line of it pasted alone would be.
func isPrivate(s string) bool {
	if i := strings.Index(s, "-----BEGIN "); i >= 0 {
		if head, _, ok := strings.Cut(s[i:], "-----\n"); ok || strings.HasSuffix(s, "-----") {
			if strings.Contains(head, "PRIVATE KEY") {
				return true
			}
		}
	}
	return strings.HasPrefix(s, "PuTTY-User-Key-File") || strings.Contains(s, "b3BlbnNzaC1rZXktdjE")
}

// bits is the size of pub's underlying key, 0 when unknown.
func bits(pub ssh.PublicKey) int {
	cp, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return 0
	}
	switch k := cp.CryptoPublicKey().(type) {
	case *rsa.PublicKey:
		return k.N.BitLen()
	case *ecdsa.PublicKey:
		return k.Curve.Params().BitSize
	case ed25519.PublicKey:
		return 256
	}
	return 0
}

// IsLeaked reports whether err refused a private key.
func IsLeaked(err error) bool {
	var ke *KeyError
	return errors.As(err, &ke) && ke.Leaked
}
