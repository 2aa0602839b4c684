package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/certs"
	"moat/internal/config"
)

// ownCA is the owner's own CA, for the certificates an app keeps in files.
type ownCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newOwnCA(t *testing.T) *ownCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "owner's CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ownCA{key, cert, pool}
}

// issue writes a certificate for name, valid for valid, and its key to
// cert and key (each replaced whole, by rename), and returns its serial.
func (ca *ownCA) issue(t *testing.T, serial int64, name string, valid time.Duration, cert, key string) *big.Int {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(valid), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, f := range []struct {
		path string
		blk  *pem.Block
	}{{key, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}, {cert, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.blk), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	return big.NewInt(serial)
}

// An app that names its certificate files is served from them, with no
// ACME order for its domain; replaced files serve without a restart; one
// that expires within 14 days is alerted and shown; files that are not
// for the domain are refused by field.
func TestCertificateFromFiles(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	alerts := e.webhookAlerts()
	ca := newOwnCA(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "origin.pem"), filepath.Join(dir, "origin.key")
	own := e.host("own")
	ca.issue(t, 10, own, 10*24*time.Hour, cert, key)
	e.dns.Set(own, loopback)
	e.dns.Set(e.host("ordered"), loopback)
	e.addApp("ordered", e.host("ordered"))
	var res api.ChangeResponse
	if err := e.client.Do(context.Background(), "POST", "/v1/apps", config.App{Name: "own", Domains: []string{own}, Upstream: e.upstream, TLS: config.TLS{Cert: cert, Key: key}}, &res); err != nil {
		t.Fatal(err)
	}

	leaf, err := e.servedCert(own, ca.pool)
	if err != nil || leaf.SerialNumber.Int64() != 10 {
		t.Fatalf("served for %s: %v", own, serialOf(leaf, err))
	}
	st := e.waitCert(own, 5*time.Second, isValid)
	if !strings.Contains(st.Message, "from "+cert) || !strings.Contains(st.Message, "expires in 9 days") {
		t.Errorf("status: %+v", st)
	}
	if a := waitAlert(t, alerts, "cert.expiring", 10*time.Second); a.Subject != own || !strings.Contains(a.Message, "replace the files") {
		t.Errorf("expiry alert: %+v", a)
	}
	resp, body := get(t, e.httpsClient(ca.pool), e.url(own, "/"))
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from "+own) {
		t.Errorf("through the edge: %d %q", resp.StatusCode, body)
	}

	// Replaced: the new certificate serves, no restart.
	ca.issue(t, 11, own, 90*24*time.Hour, cert, key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaf, err = e.servedCert(own, ca.pool)
		if err == nil && leaf.SerialNumber.Int64() == 11 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after replacing the files, still served: %v", serialOf(leaf, err))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := e.waitCert(own, 5*time.Second, func(s certs.Status) bool {
		return strings.Contains(s.Message, "from ") && !strings.Contains(s.Message, "expires in")
	}); st.State != certs.Valid {
		t.Errorf("after the new files: %+v", st)
	}

	// Files for another name are refused, and the app keeps its own.
	other := filepath.Join(dir, "other.pem")
	otherKey := filepath.Join(dir, "other.key")
	ca.issue(t, 12, "other.example", 90*24*time.Hour, other, otherKey)
	err = e.client.Do(context.Background(), "POST", "/v1/apps", config.App{Name: "wrong", Domains: []string{e.host("wrong")}, Upstream: e.upstream, TLS: config.TLS{Cert: other, Key: otherKey}}, &res)
	if err == nil || !strings.Contains(err.Error(), "apps[2].tls.cert") || !strings.Contains(err.Error(), "is not for "+e.host("wrong")) {
		t.Errorf("files for another name: %v", err)
	}

	e.waitCert(e.host("ordered"), 30*time.Second, isValid)
	if orders := e.pebble.Orders(); contains(orders, own) || !contains(orders, e.host("ordered")) {
		t.Errorf("Pebble's orders: %v; want one for %s and none for %s", orders, e.host("ordered"), own)
	}
}

func serialOf(c *x509.Certificate, err error) any {
	if err != nil {
		return err
	}
	return "serial " + c.SerialNumber.String()
}
