package maildns

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// generatedKeys makes one pair of keys for all tests: RSA generation
// takes long enough under -race to be worth doing once.
var generatedKeys = sync.OnceValues(GenerateKeys)

// testKeys returns the shared Ed25519 and RSA keys, in that order.
func testKeys(t *testing.T) []Key {
	t.Helper()
	keys, err := generatedKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// testMessage is a transactional mail as an app hands it to moat.
const testMessage = "From: Alice <alice@example.com>\r\n" +
	"To: bob@example.org\r\n" +
	"Subject: Your sign-in code\r\n" +
	"Date: Fri, 02 Jan 2026 15:04:05 +0000\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hi Bob,\r\n" +
	"your code is 123456.\r\n"

func TestGenerateKeys(t *testing.T) {
	keys := testKeys(t)
	if len(keys) != 2 {
		t.Fatalf("GenerateKeys made %d keys, want 2", len(keys))
	}
	if k := keys[0]; k.Selector != "moat-ed25519" || k.Algorithm != "ed25519" {
		t.Errorf("first key is %s/%s, want moat-ed25519/ed25519", k.Selector, k.Algorithm)
	} else if _, ok := k.Signer.(ed25519.PrivateKey); !ok {
		t.Errorf("moat-ed25519 holds a %T", k.Signer)
	}
	if k := keys[1]; k.Selector != "moat-rsa" || k.Algorithm != "rsa" {
		t.Errorf("second key is %s/%s, want moat-rsa/rsa", k.Selector, k.Algorithm)
	} else if rk, ok := k.Signer.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Errorf("moat-rsa holds a %T, want a 2048-bit RSA key", k.Signer)
	}
}

func TestTXT(t *testing.T) {
	keys := testKeys(t)

	ed, err := keys[0].TXT()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := strings.CutPrefix(ed, "v=DKIM1; k=ed25519; p=")
	if !ok {
		t.Fatalf("Ed25519 TXT = %q, want v=DKIM1; k=ed25519; p=...", ed)
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatalf("Ed25519 p=: %v", err)
	}
	// RFC 8463: the raw 32-byte key, not a SubjectPublicKeyInfo.
	if want := keys[0].Signer.Public().(ed25519.PublicKey); !bytes.Equal(raw, want) {
		t.Errorf("Ed25519 p= holds %d bytes %x, want the raw public key %x", len(raw), raw, []byte(want))
	}

	rs, err := keys[1].TXT()
	if err != nil {
		t.Fatal(err)
	}
	p, ok = strings.CutPrefix(rs, "v=DKIM1; k=rsa; p=")
	if !ok {
		t.Fatalf("RSA TXT = %q, want v=DKIM1; k=rsa; p=...", rs)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatalf("RSA p=: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("RSA p= is not a SubjectPublicKeyInfo: %v", err)
	}
	if !keys[1].Signer.Public().(*rsa.PublicKey).Equal(pub) {
		t.Error("RSA p= is another key")
	}

	wrong := Key{Selector: "moat-rsa", Algorithm: "rsa", Signer: keys[0].Signer}
	if _, err := wrong.TXT(); err == nil || !strings.Contains(err.Error(), "moat-rsa") {
		t.Errorf("TXT of an Ed25519 key labelled rsa: err = %v, want one naming moat-rsa", err)
	}
}

func TestMarshalParseKey(t *testing.T) {
	for _, k := range testKeys(t) {
		t.Run(k.Algorithm, func(t *testing.T) {
			pemBytes, err := k.MarshalPrivate()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(pemBytes, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("MarshalPrivate wrote %.40q..., want a PKCS #8 PEM block", pemBytes)
			}
			got, err := ParseKey(k.Selector, pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got.Selector != k.Selector || got.Algorithm != k.Algorithm {
				t.Errorf("ParseKey = %s/%s, want %s/%s", got.Selector, got.Algorithm, k.Selector, k.Algorithm)
			}
			wantTXT, _ := k.TXT()
			if gotTXT, err := got.TXT(); err != nil || gotTXT != wantTXT {
				t.Errorf("parsed key's TXT = %q, %v; want %q", gotTXT, err, wantTXT)
			}
		})
	}
}

func TestParseKeyRefuses(t *testing.T) {
	pkcs1 := pem.EncodeToMemory(&pem.Block{
		Type:  "RSA PRIVATE KEY",
		Bytes: x509.MarshalPKCS1PrivateKey(testKeys(t)[1].Signer.(*rsa.PrivateKey)),
	})
	tests := []struct {
		name     string
		selector string
		pem      []byte
		want     string
	}{
		{"garbage", "moat-rsa", []byte("not a key at all"), "no PEM block"},
		{"empty", "moat-ed25519", nil, "no PEM block"},
		{"PKCS #1", "moat-rsa", pkcs1, `"RSA PRIVATE KEY"`},
		{"bad DER", "moat-rsa", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "moat-rsa"},
		{"bad selector", "moat rsa", pkcs1, `"moat rsa"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey(tt.selector, tt.pem)
			if err == nil {
				t.Fatal("ParseKey accepted it")
			}
			if !strings.Contains(err.Error(), tt.selector) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseKey error %q, want one naming %s and saying %s", err, tt.selector, tt.want)
			}
		})
	}
}

func TestSign(t *testing.T) {
	keys := testKeys(t)
	records := make(map[string]string)
	for _, k := range keys {
		txt, err := k.TXT()
		if err != nil {
			t.Fatal(err)
		}
		records[k.Selector+"._domainkey.example.com"] = txt
	}
	lookup := func(name string) ([]string, error) {
		if txt, ok := records[name]; ok {
			return []string{txt}, nil
		}
		return nil, errors.New("no TXT record at " + name)
	}

	msg := []byte(testMessage)
	signed, err := Sign(msg, "example.com", keys)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != testMessage {
		t.Error("Sign modified the message it was given")
	}
	if !bytes.HasSuffix(signed, msg) || bytes.Count(signed[:len(signed)-len(msg)], []byte("DKIM-Signature:")) != 2 {
		t.Fatalf("Sign did not prepend two DKIM-Signature fields:\n%s", signed)
	}

	tests := []struct {
		name   string
		change func(string) string
		valid  bool
	}{
		{"as signed", func(m string) string { return m }, true},
		{"spaces changed in a header", func(m string) string {
			return strings.Replace(m, "Subject: Your", "Subject:   Your", 1)
		}, true},
		{"one byte of the body changed", func(m string) string {
			return strings.Replace(m, "123456", "123457", 1)
		}, false},
		{"From changed", func(m string) string {
			return strings.Replace(m, "alice@example.com", "alicf@example.com", 1)
		}, false},
		{"second From added", func(m string) string {
			return strings.Replace(m, "To: bob", "From: Mallory <ceo@example.com>\r\nTo: bob", 1)
		}, false},
		{"Reply-To added", func(m string) string {
			return strings.Replace(m, "To: bob", "Reply-To: mallory@evil.example\r\nTo: bob", 1)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.change(string(signed))
			verifs, err := dkim.VerifyWithOptions(strings.NewReader(m), &dkim.VerifyOptions{LookupTXT: lookup})
			if err != nil {
				t.Fatal(err)
			}
			if len(verifs) != 2 {
				t.Fatalf("found %d signatures, want 2", len(verifs))
			}
			for _, v := range verifs {
				if v.Domain != "example.com" {
					t.Errorf("signature for d=%s, want example.com", v.Domain)
				}
				if tt.valid && v.Err != nil {
					t.Errorf("a signature does not verify: %v", v.Err)
				}
				if !tt.valid && v.Err == nil {
					t.Errorf("a signature still verifies")
				}
				froms := 0
				for _, h := range v.HeaderKeys {
					if strings.EqualFold(h, "From") {
						froms++
					}
				}
				if froms != 2 {
					t.Errorf("h= lists From %d times, want 2 (oversigned): %v", froms, v.HeaderKeys)
				}
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	keys := testKeys(t)
	tests := []struct {
		name   string
		msg    string
		domain string
		keys   []Key
		want   string
	}{
		{"bare LF", strings.ReplaceAll(testMessage, "\r\n", "\n"), "example.com", keys, "bare LF"},
		{"no body separator", "From: alice@example.com\r\n", "example.com", keys, "moat-ed25519"},
		{"no keys", testMessage, "example.com", nil, "no keys"},
		{"bad domain", testMessage, "example..com", keys, `"example..com"`},
		{"key without signer", testMessage, "example.com", []Key{{Selector: "moat-x"}}, "moat-x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Sign([]byte(tt.msg), tt.domain, tt.keys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Sign error = %v, want one saying %s", err, tt.want)
			}
		})
	}
}
