// Package localca is a small local certificate authority for moat's demo
// mode and tests. It is not for public certificates, which come from ACME.
//
// On first run Open creates an EC P-256 root key and a self-signed root
// certificate in a directory; later runs load them. The CA then issues
// short-lived server certificates for local names such as "localhost",
// "app.localhost", "127.0.0.1" and "::1", which clients verify once they
// trust the root.
//
// People are told to trust the root system-wide, so it must never be able
// to vouch for a real site, even if its key leaks: the root carries
// critical X.509 name constraints that limit it to localhost, *.localhost
// and loopback addresses, and Leaf refuses any other name.
package localca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// File names inside the CA directory.
const (
	rootCertFile = "root.crt"
	rootKeyFile  = "root.key"
)

const (
	rootCommonName = "moat local CA"
	rootValidity   = 10 // years
	leafValidity   = 7 * 24 * time.Hour
	leafBackdate   = time.Minute
	leafRenewal    = 24 * time.Hour // re-issue when less than this is left
)

// The names the root may vouch for, as critical X.509 name constraints.
// "localhost" covers localhost itself and every name under it.
var (
	permittedDomain = "localhost"
	permittedIPs    = []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
	}
)

// CA is a local certificate authority: a root key and certificate on disk
// and an in-memory cache of leaf certificates. It is safe for concurrent
// use.
type CA struct {
	dir      string
	rootPEM  []byte
	rootCert *x509.Certificate
	rootKey  *ecdsa.PrivateKey
	now      func() time.Time // replaced in tests

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // keyed by sorted, joined names
}

// Open loads the CA stored in dir, or creates it on first run: dir (mode
// 0700), dir/root.crt (0644) and dir/root.key (0600, PKCS#8 PEM).
//
// A root.key with a mode other than 0600, or an unreadable, corrupt or
// mismatched root.crt or root.key, is an error that names the file and how
// to fix it. Open does not guard against several processes creating the
// same CA at the same moment.
func Open(dir string) (*CA, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localca: %w", err)
	}
	dir = abs
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("localca: %w", err)
	}
	ca := &CA{dir: dir, now: time.Now, leaves: make(map[string]*tls.Certificate)}

	keyPath := filepath.Join(dir, rootKeyFile)
	if _, err := os.Lstat(keyPath); errors.Is(err, fs.ErrNotExist) {
		// The key is written last, so a missing key means a first run or a
		// crash during one: (re)create both files.
		if err := ca.create(); err != nil {
			return nil, err
		}
		return ca, nil
	}
	if err := ca.load(); err != nil {
		return nil, err
	}
	return ca, nil
}

// create makes a new root key and certificate and writes them to disk,
// certificate first and key last.
func (ca *CA) create() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("localca: generate root key: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: rootCommonName},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.AddDate(rootValidity, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,

		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{permittedDomain},
	}
	for _, p := range permittedIPs {
		tmpl.PermittedIPRanges = append(tmpl.PermittedIPRanges, &net.IPNet{
			IP:   p.Addr().AsSlice(),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("localca: create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("localca: parse new root certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("localca: marshal root key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	if err := writeFileAtomic(ca.RootPath(), certPEM, 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(ca.keyPath(), keyPEM, 0o600); err != nil {
		return err
	}
	ca.rootPEM, ca.rootCert, ca.rootKey = certPEM, cert, key
	return nil
}

// load reads and checks an existing root key and certificate.
func (ca *CA) load() error {
	keyPath, certPath := ca.keyPath(), ca.RootPath()
	fix := fmt.Sprintf("remove %s to let moat create a new local CA", ca.dir)

	fi, err := os.Lstat(keyPath)
	if err != nil {
		return fmt.Errorf("localca: %w (%s)", err, fix)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("localca: %s is not a regular file (%s)", keyPath, fix)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		return fmt.Errorf("localca: %s has mode %#o, want 0600: run chmod 600 %s, or %s",
			keyPath, perm, keyPath, fix)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("localca: read %s: %w (%s)", keyPath, err, fix)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("localca: read %s: %w (%s)", keyPath, err, fix)
	}

	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return fmt.Errorf("localca: read %s: %w (%s)", certPath, err, fix)
	}
	cert, err := parseRoot(certPEM, key)
	if err != nil {
		return fmt.Errorf("localca: read %s: %w (%s)", certPath, err, fix)
	}
	if !constrained(cert) {
		// Created by a moat before roots were constrained. Re-creating it
		// here would leave the old root trusted wherever the person
		// installed it, so make them remove it knowingly.
		return fmt.Errorf("localca: %s has no name constraints limiting it to localhost "+
			"(an older moat created it), so it could vouch for any website: remove %s "+
			"so moat creates a constrained CA, and remove the old root from any trust store "+
			"you added it to", certPath, ca.dir)
	}
	if !ca.now().Before(cert.NotAfter) {
		return fmt.Errorf("localca: %s expired on %s (%s)",
			certPath, cert.NotAfter.Format(time.DateOnly), fix)
	}
	ca.rootPEM, ca.rootCert, ca.rootKey = certPEM, cert, key
	return nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an EC P-256 private key")
	}
	return key, nil
}

func parseRoot(data []byte, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM \"CERTIFICATE\" block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("not a CA certificate")
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("certificate does not match " + rootKeyFile)
	}
	return cert, nil
}

// constrained reports whether cert carries exactly the critical name
// constraints that create gives a root.
func constrained(cert *x509.Certificate) bool {
	if !cert.PermittedDNSDomainsCritical ||
		!slices.Equal(cert.PermittedDNSDomains, []string{permittedDomain}) ||
		len(cert.PermittedIPRanges) != len(permittedIPs) {
		return false
	}
	for i, r := range cert.PermittedIPRanges {
		addr, ok := netip.AddrFromSlice(r.IP)
		ones, bits := r.Mask.Size()
		if !ok || bits != addr.BitLen() || netip.PrefixFrom(addr, ones) != permittedIPs[i] {
			return false
		}
	}
	return true
}

// CheckName returns nil if the CA issues certificates for name (a DNS name
// or an IP address), and otherwise an error that says why not.
func CheckName(name string) error {
	if ip, err := netip.ParseAddr(strings.TrimSpace(name)); err == nil {
		return checkIP(ip.WithZone("").Unmap())
	}
	return checkDNS(strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), ".")))
}

func checkIP(ip netip.Addr) error {
	for _, p := range permittedIPs {
		if p.Contains(ip) {
			return nil
		}
	}
	return refuse(ip.String())
}

// checkDNS takes a lower-case name without a trailing dot. A leading "*."
// (a wildcard) is allowed.
func checkDNS(name string) error {
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	if labels[len(labels)-1] != permittedDomain || slices.Contains(labels, "") {
		return refuse(name)
	}
	return nil
}

func refuse(name string) error {
	return fmt.Errorf("localca: refusing to issue for %q: the local CA only issues for "+
		"localhost, *.localhost and loopback addresses (127.0.0.0/8, ::1)", name)
}

// writeFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so that path is either absent, the old
// content or the complete new content, even after a crash.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("localca: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("localca: write %s: %w", path, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (ca *CA) keyPath() string { return filepath.Join(ca.dir, rootKeyFile) }

// RootPath returns the absolute path of the root certificate (PEM), the
// file a person or client has to trust.
func (ca *CA) RootPath() string { return filepath.Join(ca.dir, rootCertFile) }

// RootPEM returns a copy of the PEM-encoded root certificate.
func (ca *CA) RootPEM() []byte { return slices.Clone(ca.rootPEM) }

// Pool returns a new certificate pool holding only the root certificate,
// for clients (and tests) that should trust this CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.rootCert)
	return pool
}

// Leaf returns a server certificate for the given DNS names and IP
// addresses, signed by the root. Every name must pass CheckName: the root's
// name constraints would make clients reject any other. Certificate holds
// the chain (leaf, root) and Leaf is set. It is valid for 7 days (backdated
// by a minute) and is cached in memory; a new one is issued when less than
// a day is left. The order of names does not matter.
func (ca *CA) Leaf(names ...string) (*tls.Certificate, error) {
	dns, ips, key, err := splitNames(names)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	now := ca.now()
	if c, ok := ca.leaves[key]; ok && c.Leaf.NotAfter.Sub(now) >= leafRenewal {
		return c, nil
	}
	c, err := ca.issue(now, dns, ips)
	if err != nil {
		return nil, err
	}
	ca.leaves[key] = c
	return c, nil
}

// splitNames sorts names into DNS names and IP addresses, checks that the
// CA may issue for them and returns the cache key for them.
func splitNames(names []string) (dns []string, ips []netip.Addr, key string, err error) {
	var all []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if ip, err := netip.ParseAddr(n); err == nil {
			ip = ip.WithZone("").Unmap()
			if err := checkIP(ip); err != nil {
				return nil, nil, "", err
			}
			ips = append(ips, ip)
			all = append(all, ip.String())
			continue
		}
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" || strings.ContainsAny(n, " \t/:@") {
			return nil, nil, "", fmt.Errorf("localca: invalid name %q", n)
		}
		if err := checkDNS(n); err != nil {
			return nil, nil, "", err
		}
		dns = append(dns, n)
		all = append(all, n)
	}
	if len(all) == 0 {
		return nil, nil, "", errors.New("localca: no names for certificate")
	}
	slices.Sort(all)
	all = slices.Compact(all)
	slices.Sort(dns)
	dns = slices.Compact(dns)
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	return dns, ips, strings.Join(all, ","), nil
}

// issue creates a new leaf certificate.
func (ca *CA) issue(now time.Time, dns []string, ips []netip.Addr) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("localca: generate leaf key: %w", err)
	}
	tmpl := &x509.Certificate{
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(leafValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	}
	if len(dns) > 0 {
		tmpl.Subject.CommonName = dns[0]
	} else {
		tmpl.Subject.CommonName = ips[0].String()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.rootCert, key.Public(), ca.rootKey)
	if err != nil {
		return nil, fmt.Errorf("localca: create leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("localca: parse new leaf certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, ca.rootCert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// GetCertificate returns a callback for tls.Config.GetCertificate that
// serves the leaf for names whatever server name the client asks for, or
// none: a demo on localhost is often reached without SNI.
func (ca *CA) GetCertificate(names ...string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	names = slices.Clone(names)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return ca.Leaf(names...)
	}
}

// TrustHelp returns short plain text telling a person how to trust the
// root certificate: system-wide on Debian/Ubuntu, with curl, and in
// Firefox and Chrome.
func (ca *CA) TrustHelp() string {
	root := ca.RootPath()
	q := shellQuote(root)
	var b strings.Builder
	fmt.Fprintf(&b, "moat's demo certificates come from a local CA. Its root certificate is\n\n    %s\n\n", root)
	b.WriteString("Trust it to connect without certificate warnings:\n\n")
	fmt.Fprintf(&b, "  Debian/Ubuntu (system-wide, as root):\n    cp %s /usr/local/share/ca-certificates/moat-local-ca.crt && update-ca-certificates\n\n", q)
	fmt.Fprintf(&b, "  curl:\n    curl --cacert %s <the URL moat printed>\n\n", q)
	fmt.Fprintf(&b, "  Firefox: Settings > Privacy & Security > Certificates > View Certificates >\n    Authorities > Import, choose %s, tick \"Trust this CA to identify websites\".\n\n", root)
	fmt.Fprintf(&b, "  Chrome: Settings > Privacy and security > Security > Manage certificates >\n    Authorities > Import, choose %s.\n\n", root)
	b.WriteString("The CA is limited to localhost, *.localhost and loopback addresses (X.509 name\n" +
		"constraints): it cannot vouch for real websites, even if its key leaks.\n")
	fmt.Fprintf(&b, "Still, only trust it on machines you control, and keep %s private.\n"+
		"To start over, remove %s and the copy in your trust store.\n", ca.keyPath(), ca.dir)
	return b.String()
}

// shellQuote quotes s for a POSIX shell if it contains anything unusual.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
