package maildns

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// The selectors GenerateKeys names its keys with. They are fixed so that
// the records an owner publishes once stay right across restarts and
// reinstalls that keep the store.
const (
	SelectorEd25519 = "moat-ed25519"
	SelectorRSA     = "moat-rsa"
)

// rsaBits is the size of the RSA key GenerateKeys makes: RFC 8301 asks
// signers for at least 1024 bits and recommends 2048, and 2048 is the
// largest whose record still fits most DNS providers' forms.
const rsaBits = 2048

// minRSABits is the smallest RSA key ParseKey accepts, because RFC 8301
// tells receivers to ignore signatures made with anything smaller.
const minRSABits = 1024

// pemType is the PEM block type of a PKCS #8 private key.
const pemType = "PRIVATE KEY"

// Key is a DKIM signing key with its selector.
type Key struct {
	// Selector names the key in DNS: receivers find its public half at
	// <Selector>._domainkey.<domain>. Like "moat-ed25519" or "moat-rsa".
	Selector string
	// Algorithm is "ed25519" or "rsa", the k= of the key's record. It
	// must match Signer; it is here so callers can show it without a
	// type switch.
	Algorithm string
	// Signer is an ed25519.PrivateKey or an *rsa.PrivateKey.
	Signer crypto.Signer
}

// GenerateKeys makes the pair moat signs with: an Ed25519 key (selector
// "moat-ed25519") and an RSA-2048 key (selector "moat-rsa"). Mail carries
// a signature from each, because receivers that do not know Ed25519
// (RFC 8463) ignore that signature and check the RSA one.
func GenerateKeys() ([]Key, error) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the Ed25519 DKIM key: %w", err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, fmt.Errorf("generating the RSA DKIM key: %w", err)
	}
	return []Key{
		{Selector: SelectorEd25519, Algorithm: "ed25519", Signer: ed},
		{Selector: SelectorRSA, Algorithm: "rsa", Signer: rk},
	}, nil
}

// MarshalPrivate is the key as a PKCS #8 PEM block, for storage. The
// selector is not part of it; ParseKey is given it again.
func (k Key) MarshalPrivate() ([]byte, error) {
	if _, err := k.algorithm(); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		return nil, fmt.Errorf("DKIM key %s: encoding the private key: %w", k.Selector, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// ParseKey reads what MarshalPrivate wrote. The algorithm is taken from
// the key itself. Errors name the selector, since a store holds several.
func ParseKey(selector string, pemBytes []byte) (Key, error) {
	if err := validSelector(selector); err != nil {
		return Key{}, err
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Key{}, fmt.Errorf("DKIM key %s: no PEM block found", selector)
	}
	if block.Type != pemType {
		return Key{}, fmt.Errorf("DKIM key %s: PEM block is %q, want %q (PKCS #8)", selector, block.Type, pemType)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("DKIM key %s: %w", selector, err)
	}
	k := Key{Selector: selector}
	switch priv := priv.(type) {
	case ed25519.PrivateKey:
		k.Algorithm, k.Signer = "ed25519", priv
	case *rsa.PrivateKey:
		if bits := priv.N.BitLen(); bits < minRSABits {
			return Key{}, fmt.Errorf("DKIM key %s: RSA key of %d bits is too short: receivers ignore signatures from keys under %d bits", selector, bits, minRSABits)
		}
		k.Algorithm, k.Signer = "rsa", priv
	default:
		return Key{}, fmt.Errorf("DKIM key %s: %T is neither Ed25519 nor RSA", selector, priv)
	}
	return k, nil
}

// TXT is the value of the key's DKIM record: "v=DKIM1; k=ed25519; p=<base64
// of the raw 32-byte public key>" as RFC 8463 defines it, or "v=DKIM1;
// k=rsa; p=<base64 of the DER SubjectPublicKeyInfo>".
func (k Key) TXT() (string, error) {
	algo, err := k.algorithm()
	if err != nil {
		return "", err
	}
	var raw []byte
	switch pub := k.Signer.Public().(type) {
	case ed25519.PublicKey:
		raw = pub
	case *rsa.PublicKey:
		if raw, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return "", fmt.Errorf("DKIM key %s: encoding the public key: %w", k.Selector, err)
		}
	}
	return "v=DKIM1; k=" + algo + "; p=" + base64.StdEncoding.EncodeToString(raw), nil
}

// algorithm returns the k= of the key, "ed25519" or "rsa", taken from
// Signer, and checks that Algorithm, when set, agrees.
func (k Key) algorithm() (string, error) {
	if k.Signer == nil {
		return "", fmt.Errorf("DKIM key %s: no private key", k.Selector)
	}
	var algo string
	switch pub := k.Signer.Public().(type) {
	case ed25519.PublicKey:
		algo = "ed25519"
	case *rsa.PublicKey:
		algo = "rsa"
	default:
		return "", fmt.Errorf("DKIM key %s: %T is neither Ed25519 nor RSA", k.Selector, pub)
	}
	if k.Algorithm != "" && k.Algorithm != algo {
		return "", fmt.Errorf("DKIM key %s: says algorithm %q but holds an %s key", k.Selector, k.Algorithm, algo)
	}
	return algo, nil
}

// signedHeaders returns the header fields each signature covers, each
// listed twice. Listing a field once more than the message has it
// ("oversigning", RFC 6376 section 8.15) makes the signature fail if one
// is added later, so nobody on the way can slip in a second From, a Cc
// or a Reply-To that a mail client would show instead of the signed one.
// Every field here occurs at most once in a well-formed message.
func signedHeaders() []string {
	fields := []string{
		"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date",
		"Message-ID", "In-Reply-To", "References",
		"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
		// Big receivers want one-click unsubscribe links signed.
		"List-Unsubscribe", "List-Unsubscribe-Post",
	}
	return append(fields, fields...)
}

// Sign returns msg (a whole RFC 5322 message with CRLF line endings) with
// one DKIM-Signature header field per key prepended, signing for domain
// (d=) with relaxed/relaxed canonicalisation, so that the usual rewrapping
// of header fields and trailing whitespace on the way does not break the
// signatures. msg is not modified.
func Sign(msg []byte, domain string, keys []Key) ([]byte, error) {
	d, err := domainName(domain)
	if err != nil {
		return nil, fmt.Errorf("DKIM-signing: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("DKIM-signing for %s: no keys", d)
	}
	if err := checkCRLF(msg); err != nil {
		return nil, fmt.Errorf("DKIM-signing for %s: %w", d, err)
	}
	sigs := make([]string, 0, len(keys))
	size := len(msg)
	for _, k := range keys {
		sig, err := signOne(msg, d, k)
		if err != nil {
			return nil, fmt.Errorf("DKIM-signing for %s with key %s: %w", d, k.Selector, err)
		}
		sigs = append(sigs, sig)
		size += len(sig)
	}
	out := make([]byte, 0, size)
	for _, sig := range sigs {
		out = append(out, sig...)
	}
	return append(out, msg...), nil
}

// signOne returns the DKIM-Signature header field, CRLF included, of msg
// under one key. Each signature covers msg alone, not the other
// signatures, so receivers can check them in any order.
func signOne(msg []byte, domain string, k Key) (string, error) {
	if err := validSelector(k.Selector); err != nil {
		return "", err
	}
	if _, err := k.algorithm(); err != nil {
		return "", err
	}
	s, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 domain,
		Selector:               k.Selector,
		Signer:                 k.Signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signedHeaders(),
	})
	if err != nil {
		return "", err
	}
	if _, err := s.Write(msg); err != nil {
		// The signer stops reading when it cannot parse the header;
		// Close says why.
		if cerr := s.Close(); cerr != nil {
			return "", cerr
		}
		return "", err
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	return s.Signature(), nil
}

// checkCRLF refuses a message with a bare LF. Relaxed canonicalisation
// hashes lines as CRLF-terminated; a message sent with other line endings
// gets them rewritten on the way and then fails every check, which
// receivers report as forged mail rather than as a bug.
func checkCRLF(msg []byte) error {
	for i, b := range msg {
		if b == '\n' && (i == 0 || msg[i-1] != '\r') {
			return errors.New("message has a line ending in a bare LF, want CRLF")
		}
	}
	return nil
}

// validSelector checks that s can be a DKIM selector: one or more DNS
// labels of letters, digits and hyphens (RFC 6376 section 3.1).
func validSelector(s string) error {
	if s == "" {
		return errors.New("DKIM key has no selector")
	}
	for label := range strings.SplitSeq(s, ".") {
		if !isLDH(label) {
			return fmt.Errorf("DKIM selector %q: want DNS labels of letters, digits and hyphens", s)
		}
	}
	return nil
}
