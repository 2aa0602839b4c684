package localca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return ca, dir
}

func TestOpenCreates(t *testing.T) {
	ca, dir := openTemp(t)

	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, os.ModeDir | 0o700},
		{filepath.Join(dir, "root.crt"), 0o644},
		{filepath.Join(dir, "root.key"), 0o600},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
	}
	if got, want := ca.RootPath(), filepath.Join(dir, "root.crt"); got != want {
		t.Errorf("RootPath = %q, want %q", got, want)
	}
	onDisk, err := os.ReadFile(ca.RootPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca.RootPEM()) {
		t.Error("RootPEM differs from root.crt")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temp files left)", len(entries))
	}

	keyPEM, err := os.ReadFile(filepath.Join(dir, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("root.key is not PKCS#8 PEM: %.40q", keyPEM)
	}

	root := ca.rootCert
	pub, ok := root.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || pub.Curve != elliptic.P256():
		t.Errorf("root key is %T, want EC P-256", root.PublicKey)
	case root.Subject.CommonName != "moat local CA":
		t.Errorf("root CN = %q", root.Subject.CommonName)
	case !root.IsCA || !root.BasicConstraintsValid || root.MaxPathLen != 0 || !root.MaxPathLenZero:
		t.Errorf("root basic constraints: IsCA=%v MaxPathLen=%d", root.IsCA, root.MaxPathLen)
	case root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("root key usage = %v", root.KeyUsage)
	case len(root.SubjectKeyId) == 0:
		t.Error("root has no SubjectKeyId")
	case !root.PermittedDNSDomainsCritical || !slices.Equal(root.PermittedDNSDomains, []string{"localhost"}):
		t.Errorf("root DNS constraints: critical=%v permitted=%q", root.PermittedDNSDomainsCritical, root.PermittedDNSDomains)
	}
	var ranges []string
	for _, r := range root.PermittedIPRanges {
		ranges = append(ranges, r.String())
	}
	if want := []string{"127.0.0.0/8", "::1/128"}; !slices.Equal(ranges, want) {
		t.Errorf("root permitted IP ranges = %q, want %q", ranges, want)
	}
	if len(root.ExcludedDNSDomains)+len(root.ExcludedIPRanges) != 0 {
		t.Errorf("root has excluded subtrees: %q %v", root.ExcludedDNSDomains, root.ExcludedIPRanges)
	}
	if years := root.NotAfter.Sub(root.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("root valid for %.2f years, want 10", years)
	}
}

func TestOpenLoadsSameRoot(t *testing.T) {
	ca1, dir := openTemp(t)
	ca2, err := Open(dir)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if !bytes.Equal(ca1.rootCert.Raw, ca2.rootCert.Raw) {
		t.Error("second Open returned a different root certificate")
	}
	if !bytes.Equal(ca1.rootCert.SubjectKeyId, ca2.rootCert.SubjectKeyId) {
		t.Error("second Open returned a different SubjectKeyId")
	}
	if !ca1.rootKey.Equal(ca2.rootKey) {
		t.Error("second Open returned a different root key")
	}
	// A leaf from one verifies against the pool of the other.
	c, err := ca2.Leaf("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca1.Pool(), DNSName: "localhost"}); err != nil {
		t.Errorf("leaf from reloaded CA: %v", err)
	}
}

func TestLeafVerifies(t *testing.T) {
	ca, _ := openTemp(t)
	other, _ := openTemp(t)
	for _, tc := range []struct {
		names  []string
		verify string // name to verify
		roots  *x509.CertPool
		isIP   bool
		ok     bool
	}{
		{[]string{"localhost"}, "localhost", ca.Pool(), false, true},
		{[]string{"127.0.0.1"}, "127.0.0.1", ca.Pool(), true, true},
		{[]string{"::1"}, "::1", ca.Pool(), true, true},
		{[]string{"localhost", "127.0.0.1", "::1"}, "::1", ca.Pool(), true, true},
		{[]string{"app.localhost"}, "app.localhost", ca.Pool(), false, true},
		{[]string{"*.localhost"}, "app.localhost", ca.Pool(), false, true},
		{[]string{"a.b.localhost", "127.1.2.3"}, "127.1.2.3", ca.Pool(), true, true},
		{[]string{"::ffff:127.0.0.1"}, "127.0.0.1", ca.Pool(), true, true},
		{[]string{"localhost"}, "example.com", ca.Pool(), false, false},
		{[]string{"localhost"}, "localhost", other.Pool(), false, false},
	} {
		t.Run(strings.Join(tc.names, ",")+"/"+tc.verify, func(t *testing.T) {
			c, err := ca.Leaf(tc.names...)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[1], ca.rootCert.Raw) {
				t.Errorf("chain has %d certificates, want (leaf, root)", len(c.Certificate))
			}
			if c.Leaf == nil || !bytes.Equal(c.Leaf.Raw, c.Certificate[0]) {
				t.Fatal("Leaf not set to the first certificate")
			}
			if tc.isIP && len(c.Leaf.IPAddresses) == 0 {
				t.Errorf("IP %s not in IPAddresses (DNSNames %v)", tc.verify, c.Leaf.DNSNames)
			}
			if got := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); got != 7*24*time.Hour+time.Minute {
				t.Errorf("leaf validity = %v", got)
			}
			if len(c.Leaf.ExtKeyUsage) != 1 || c.Leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || c.Leaf.IsCA {
				t.Errorf("leaf usage: ext %v IsCA %v", c.Leaf.ExtKeyUsage, c.Leaf.IsCA)
			}
			_, err = c.Leaf.Verify(x509.VerifyOptions{Roots: tc.roots, DNSName: tc.verify})
			if (err == nil) != tc.ok {
				t.Errorf("Verify(%s) error = %v, want ok=%v", tc.verify, err, tc.ok)
			}
		})
	}
}

func TestLeafErrors(t *testing.T) {
	ca, _ := openTemp(t)
	for _, names := range [][]string{nil, {""}, {"bad name"}, {"http://x"}} {
		if _, err := ca.Leaf(names...); err == nil {
			t.Errorf("Leaf(%q) succeeded", names)
		}
	}
}

// The root must not vouch for real sites, so Leaf refuses names outside
// localhost and loopback, and says which name and why.
func TestLeafRefusesNonLocal(t *testing.T) {
	ca, _ := openTemp(t)
	for _, tc := range []struct {
		names []string
		bad   string // the name the error must quote
	}{
		{[]string{"example.com"}, "example.com"},
		{[]string{"localhost", "example.com"}, "example.com"},
		{[]string{"*.example.com"}, "*.example.com"},
		{[]string{"*"}, "*"},
		{[]string{"localhost.example.com"}, "localhost.example.com"},
		{[]string{"notlocalhost"}, "notlocalhost"},
		{[]string{"app..localhost"}, "app..localhost"},
		{[]string{".localhost"}, ".localhost"},
		{[]string{"192.0.2.1"}, "192.0.2.1"},
		{[]string{"10.0.0.1"}, "10.0.0.1"},
		{[]string{"::2"}, "::2"},
		{[]string{"::ffff:192.0.2.1"}, "192.0.2.1"},
	} {
		t.Run(strings.Join(tc.names, ","), func(t *testing.T) {
			c, err := ca.Leaf(tc.names...)
			if err == nil {
				t.Fatalf("Leaf issued for %v", c.Leaf.DNSNames)
			}
			msg := err.Error()
			if !strings.Contains(msg, `"`+tc.bad+`"`) ||
				!strings.Contains(msg, "only issues for localhost, *.localhost and loopback addresses") {
				t.Errorf("error %q does not name %q and say what the CA issues for", msg, tc.bad)
			}
			if CheckName(tc.bad) == nil {
				t.Errorf("CheckName(%q) = nil", tc.bad)
			}
		})
	}
	for _, ok := range []string{"localhost", "LocalHost.", "app.localhost", "*.localhost", "127.0.0.1", "127.255.0.1", "::1"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
}

// Even a certificate signed with the root key directly, bypassing Leaf's
// checks (say, by someone who stole the key), does not verify for a name
// outside the root's constraints.
func TestRootConstraintsHold(t *testing.T) {
	ca, _ := openTemp(t)
	for _, tc := range []struct {
		name   string
		dns    []string
		ips    []net.IP
		verify string
	}{
		{"dns", []string{"example.com"}, nil, "example.com"},
		{"dns with a local name too", []string{"localhost", "example.com"}, nil, "localhost"},
		{"wildcard", []string{"*.example.com"}, nil, "www.example.com"},
		{"ip", nil, []net.IP{net.ParseIP("192.0.2.1").To4()}, "192.0.2.1"},
		{"ipv6", nil, []net.IP{net.ParseIP("2001:db8::1")}, "2001:db8::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(1),
				Subject:      pkix.Name{CommonName: tc.verify},
				NotBefore:    time.Now().Add(-time.Minute),
				NotAfter:     time.Now().Add(time.Hour),
				KeyUsage:     x509.KeyUsageDigitalSignature,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				DNSNames:     tc.dns,
				IPAddresses:  tc.ips,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.rootCert, key.Public(), ca.rootKey)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: tc.verify})
			var invalid x509.CertificateInvalidError
			if !errors.As(err, &invalid) || invalid.Reason != x509.CANotAuthorizedForThisName {
				t.Errorf("Verify = %v, want the root's name constraints to refuse it", err)
			}
		})
	}
}

func TestLeafCache(t *testing.T) {
	ca, _ := openTemp(t)
	a, err := ca.Leaf("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Leaf("127.0.0.1", "LOCALHOST", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("same names in another order issued a new certificate")
	}
	start := time.Now()
	for _, tc := range []struct {
		after time.Duration
		fresh bool
	}{
		{5 * 24 * time.Hour, false},
		{6*24*time.Hour - time.Hour, false},
		{6*24*time.Hour + time.Hour, true},
	} {
		ca.now = func() time.Time { return start.Add(tc.after) }
		c, err := ca.Leaf("localhost", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if (c != a) != tc.fresh {
			t.Errorf("after %v: new certificate = %v, want %v", tc.after, c != a, tc.fresh)
		}
	}
}

func TestLeafConcurrent(t *testing.T) {
	ca, _ := openTemp(t)
	get := ca.GetCertificate("localhost", "127.0.0.1")
	var wg sync.WaitGroup
	certs := make([]*tls.Certificate, 16)
	for i := range certs {
		wg.Go(func() {
			c, err := get(&tls.ClientHelloInfo{})
			if err != nil {
				t.Error(err)
			}
			certs[i] = c
		})
	}
	wg.Wait()
	for _, c := range certs[1:] {
		if c != certs[0] {
			t.Fatal("concurrent calls issued different certificates")
		}
	}
}

func TestHandshake(t *testing.T) {
	ca, _ := openTemp(t)
	other, _ := openTemp(t)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetCertificate: ca.GetCertificate("localhost", "127.0.0.1", "::1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.(*tls.Conn).Handshake()
			}()
		}
	}()

	for _, tc := range []struct {
		name       string
		serverName string // "127.0.0.1" and "::1" send no SNI
		roots      *x509.CertPool
		ok         bool
	}{
		{"trusted/localhost", "localhost", ca.Pool(), true},
		{"trusted/no SNI 127.0.0.1", "127.0.0.1", ca.Pool(), true},
		{"trusted/no SNI ::1", "::1", ca.Pool(), true},
		{"trusted/wrong name", "example.com", ca.Pool(), false},
		{"system roots", "localhost", nil, false},
		{"other CA", "localhost", other.Pool(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
				&tls.Config{ServerName: tc.serverName, RootCAs: tc.roots})
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				var unknown x509.UnknownAuthorityError
				var hostname x509.HostnameError
				if !errors.As(err, &unknown) && !errors.As(err, &hostname) {
					t.Errorf("handshake failed for another reason: %v", err)
				}
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		file  string // file the error must name
		want  string // other text the error must hold
	}{
		{"corrupt key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "root.key"), "not a key", 0o600)
		}, "root.key", "remove"},
		{"key mode 0644", func(t *testing.T, dir string) {
			chmod(t, filepath.Join(dir, "root.key"), 0o644)
		}, "root.key", "chmod 600"},
		{"key mode 0400", func(t *testing.T, dir string) {
			chmod(t, filepath.Join(dir, "root.key"), 0o400)
		}, "root.key", "chmod 600"},
		{"key unreadable (a directory)", func(t *testing.T, dir string) {
			key := filepath.Join(dir, "root.key")
			os.Remove(key)
			if err := os.Mkdir(key, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "root.key", "remove"},
		{"corrupt certificate", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "root.crt"), "garbage", 0o644)
		}, "root.crt", "remove"},
		{"certificate missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "root.crt"))
		}, "root.crt", "remove"},
		{"key of another CA", func(t *testing.T, dir string) {
			_, odir := openTemp(t)
			data, err := os.ReadFile(filepath.Join(odir, "root.key"))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "root.key"), string(data), 0o600)
		}, "root.crt", "does not match"},
		{"root without name constraints (older moat)", func(t *testing.T, dir string) {
			writeUnconstrainedRoot(t, dir)
		}, "root.crt", "so moat creates a constrained CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := openTemp(t)
			tc.setup(t, dir)
			_, err := Open(dir)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "localca: ") ||
				!strings.Contains(msg, filepath.Join(dir, tc.file)) ||
				!strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %s and %q", msg, tc.file, tc.want)
			}
		})
	}
}

func TestOpenRecreatesWhenKeyMissing(t *testing.T) {
	// A crash after writing root.crt but before root.key leaves no key.
	ca1, dir := openTemp(t)
	os.Remove(filepath.Join(dir, "root.key"))
	ca2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ca1.rootCert.Raw, ca2.rootCert.Raw) {
		t.Error("root not recreated")
	}
}

func TestTrustHelp(t *testing.T) {
	ca, _ := openTemp(t)
	help := ca.TrustHelp()
	root := ca.RootPath()
	for _, want := range []string{
		"cp " + root + " /usr/local/share/ca-certificates/moat-local-ca.crt && update-ca-certificates",
		"curl --cacert " + root + " ",
		"the URL moat printed",
		"Firefox", "Chrome", "Authorities",
		"limited to localhost, *.localhost and loopback addresses",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("TrustHelp lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "any website") {
		t.Errorf("TrustHelp still says the CA can impersonate any website:\n%s", help)
	}
	if got := shellQuote("/tmp/it's here"); got != `'/tmp/it'\''s here'` {
		t.Errorf("shellQuote = %s", got)
	}
}

// writeUnconstrainedRoot replaces the CA in dir with one as an older moat
// created it: the same, but without name constraints.
func writeUnconstrainedRoot(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "moat local CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "root.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeFile(t, filepath.Join(dir, "root.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), 0o600)
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, path, mode)
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
