package sshd

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// line is pub as an authorized_keys line, with a comment.
func line(t testing.TB, pub any, comment string) string {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// wire writes SSH strings: a key blob by hand, for key kinds Go's
// crypto does not make (security keys).
func wire(parts ...[]byte) string {
	var b []byte
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return base64.StdEncoding.EncodeToString(b)
}

var rsaKeys = sync.OnceValue(func() map[int]*rsa.PrivateKey {
	m := map[int]*rsa.PrivateKey{}
	for _, n := range []int{1024, 2048, 3072} {
		k, err := rsa.GenerateKey(rand.Reader, n)
		if err != nil {
			panic(err)
		}
		m[n] = k
	}
	return m
})

func TestParseKey(t *testing.T) {
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ec := func(c elliptic.Curve) *ecdsa.PublicKey {
		k, _ := ecdsa.GenerateKey(c, rand.Reader)
		return &k.PublicKey
	}
	ecPoint := func() []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		b, _ := k.PublicKey.ECDH()
		return b.Bytes()
	}
	// A DSA key's blob: the name and four integers (p, q, g, y).
	mpint := func(n int) []byte { b := make([]byte, n); b[0], b[n-1] = 0x7f, 0x01; return b }
	dsaLine := "ssh-dss " + wire([]byte("ssh-dss"), mpint(128), mpint(20), mpint(128), mpint(128)) + " old"
	privPEM, _ := ssh.MarshalPrivateKey(edPriv, "")
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("x")})
	rk := rsaKeys()

	good := []struct {
		name, line, typ string
		bits            int
		warn            bool
		options         []string
	}{
		{"ed25519", line(t, edPub, "me@laptop"), ssh.KeyAlgoED25519, 256, false, nil},
		{"ecdsa 256", line(t, ec(elliptic.P256()), "x"), ssh.KeyAlgoECDSA256, 256, false, nil},
		{"ecdsa 384", line(t, ec(elliptic.P384()), "x"), ssh.KeyAlgoECDSA384, 384, false, nil},
		{"ecdsa 521", line(t, ec(elliptic.P521()), "x"), ssh.KeyAlgoECDSA521, 521, false, nil},
		{"rsa 3072", line(t, &rk[3072].PublicKey, "x"), ssh.KeyAlgoRSA, 3072, false, nil},
		{"rsa 2048, with a warning", line(t, &rk[2048].PublicKey, "x"), ssh.KeyAlgoRSA, 2048, true, nil},
		{"sk ed25519", ssh.KeyAlgoSKED25519 + " " + wire([]byte(ssh.KeyAlgoSKED25519), edPub, []byte("ssh:")) + " yubikey", ssh.KeyAlgoSKED25519, 256, false, nil},
		{"sk ecdsa", ssh.KeyAlgoSKECDSA256 + " " + wire([]byte(ssh.KeyAlgoSKECDSA256), []byte("nistp256"), ecPoint(), []byte("ssh:")) + " yubikey", ssh.KeyAlgoSKECDSA256, 256, false, nil},
		{"options kept", `from="203.0.113.0/24",command="backup" ` + line(t, edPub, "backup"), ssh.KeyAlgoED25519, 256, false, []string{`from="203.0.113.0/24"`, `command="backup"`}},
		{"private key in the comment is just words", line(t, edPub, "my work private key"), ssh.KeyAlgoED25519, 256, false, nil},
		{"no comment, spaces around", "  " + strings.TrimSuffix(line(t, edPub, ""), " ") + "  ", ssh.KeyAlgoED25519, 256, false, nil},
	}
	for _, g := range good {
		t.Run(g.name, func(t *testing.T) {
			k, warning, err := ParseKey(g.line)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if k.Type != g.typ || k.Bits != g.bits || !strings.HasPrefix(k.Fingerprint, "SHA256:") || (warning != "") != g.warn {
				t.Errorf("got %+v, warning %q", k, warning)
			}
			if strings.Join(k.Options, ",") != strings.Join(g.options, ",") {
				t.Errorf("options %q, want %q", k.Options, g.options)
			}
			again, _, err := ParseKey(k.Line)
			if err != nil || again.Fingerprint != k.Fingerprint || again.Line != k.Line {
				t.Errorf("the written line %q does not read back the same: %+v, %v", k.Line, again, err)
			}
		})
	}

	bad := []struct {
		name, line, problem string
		leaked              bool
	}{
		{"dsa", dsaLine, "DSA", false},
		{"rsa 1024", line(t, &rk[1024].PublicKey, "x"), "1024 bits", false},
		{"openssh private key", string(pem.EncodeToMemory(privPEM)), "PRIVATE key", true},
		{"openssh private key, one line of it", strings.Split(string(pem.EncodeToMemory(privPEM)), "\n")[1], "PRIVATE key", true},
		{"pem rsa private key", string(rsaPEM), "PRIVATE key", true},
		{"putty private key", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none", "PRIVATE key", true},
		{"malformed", "ssh-ed25519 AAAAnotbase64!! me", "not a public key", false},
		{"truncated", strings.TrimSuffix(line(t, edPub, ""), " ")[:40], "not a public key", false},
		{"empty", "   ", "empty", false},
		{"comment", "# my key", "comment", false},
		{"two lines", line(t, edPub, "a") + "\n" + line(t, edPub, "b"), "more than one line", false},
		{"control characters", line(t, edPub, "a\x00b"), "control characters", false},
		{"an option sshd does not know", "no-ptty " + line(t, edPub, "x"), `"no-ptty" is not one sshd knows`, false},
		{"certificate", certLine(t, edPub, edPriv), "certificate", false},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			k, _, err := ParseKey(b.line)
			if err == nil {
				t.Fatalf("accepted: %+v", k)
			}
			var ke *KeyError
			if !strings.Contains(err.Error(), b.problem) || IsLeaked(err) != b.leaked || !asKeyError(err, &ke) || ke.Fix == "" {
				t.Errorf("%v (leaked %v), want a refusal about %q with a fix, leaked %v", err, IsLeaked(err), b.problem, b.leaked)
			}
		})
	}
}

func asKeyError(err error, ke **KeyError) bool {
	k, ok := err.(*KeyError)
	*ke = k
	return ok
}

func certLine(t *testing.T, pub ed25519.PublicKey, priv ed25519.PrivateKey) string {
	t.Helper()
	sp, _ := ssh.NewPublicKey(pub)
	signer, _ := ssh.NewSignerFromKey(priv)
	c := &ssh.Certificate{Key: sp, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c)))
}

func FuzzParseKey(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(line(f, pub, "me"))
	f.Add(`from="10.0.0.0/8" ` + line(f, pub, "x y z"))
	f.Add("ssh-rsa AAAA")
	f.Add("-----BEGIN OPENSSH PRIVATE KEY-----")
	f.Fuzz(func(t *testing.T, in string) {
		k, _, err := ParseKey(in)
		if err != nil {
			var ke *KeyError
			if !asKeyError(err, &ke) || ke.Problem == "" || ke.Fix == "" {
				t.Fatalf("a refusal without its reason and fix: %v", err)
			}
			return
		}
		if strings.ContainsAny(k.Line, "\r\n\x00") {
			t.Fatalf("an accepted key's line holds a line break: %q", k.Line)
		}
		again, _, err := ParseKey(k.Line)
		if err != nil || again.Fingerprint != k.Fingerprint || again.Line != k.Line {
			t.Fatalf("%q: its line %q reads back as %+v, %v", in, k.Line, again, err)
		}
	})
}
