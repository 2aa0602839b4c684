package certs

// This file holds the certificates the owner keeps in files: loaded,
// served for their domains instead of ordered, watched and reloaded when
// the files change, and warned of before they expire.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"moat/internal/config"
)

// ExpiryWarning is how long before a certificate from files expires that
// its status says so and an alert goes out: nobody renews it but the
// owner.
const ExpiryWarning = 14 * 24 * time.Hour

// fileCert is one domain's certificate from files.
type fileCert struct {
	file  config.CertFile
	cert  *tls.Certificate
	leaf  *x509.Certificate
	stamp string // the files' sizes and times when read
	// problem is why the files last failed to load; the certificate
	// before serves meanwhile.
	problem string
	warned  time.Time // the NotAfter an expiry alert went out for
}

// LoadFiles reads a certificate and its key, and checks that they belong
// together and that the certificate is for domain. The error names the
// field, the file and the fix.
func LoadFiles(f config.CertFile) (*tls.Certificate, *x509.Certificate, error) {
	bad := func(field, value, problem, fix string) error {
		return &config.FieldError{Field: f.Field + "." + field, Value: value, Problem: problem, Fix: fix}
	}
	for _, p := range []struct{ field, path string }{{"cert", f.TLS.Cert}, {"key", f.TLS.Key}} {
		if _, err := os.Stat(p.path); err != nil {
			return nil, nil, bad(p.field, p.path, "cannot be read ("+errors.Unwrap(err).Error()+")", "give the path of a file moat (root) can read")
		}
	}
	pair, err := tls.LoadX509KeyPair(f.TLS.Cert, f.TLS.Key)
	if err != nil {
		return nil, nil, bad("cert", f.TLS.Cert, "and "+f.TLS.Key+" do not make a certificate ("+err.Error()+")", "give the PEM certificate and the PEM private key that belongs to it")
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, nil, bad("cert", f.TLS.Cert, "holds no certificate moat can read ("+err.Error()+")", "give a PEM X.509 certificate")
		}
	}
	if err := leaf.VerifyHostname(f.Domain); err != nil {
		return nil, nil, bad("cert", f.TLS.Cert, fmt.Sprintf("is not for %s (it is for %v)", f.Domain, names(leaf)), "give a certificate whose names include "+f.Domain+", or remove tls to have moat order one")
	}
	return &pair, leaf, nil
}

func names(c *x509.Certificate) []string {
	out := append([]string(nil), c.DNSNames...)
	if len(out) == 0 && c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// CheckFiles loads every certificate from files, without changing
// anything: a bad one is refused before it is stored.
func CheckFiles(files []config.CertFile) error {
	for _, f := range files {
		if _, _, err := LoadFiles(f); err != nil {
			return err
		}
	}
	return nil
}

// stampOf is what changes when either file is replaced or written.
func stampOf(f config.CertFile) string {
	s := ""
	for _, p := range []string{f.TLS.Cert, f.TLS.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			s += "missing;"
			continue
		}
		s += fmt.Sprintf("%d %d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}

// syncFiles makes files the set served from files.
func (m *Manager) syncFiles(files []config.CertFile) error {
	next := map[string]*fileCert{}
	m.mu.Lock()
	cur := m.files
	m.mu.Unlock()
	for _, f := range files {
		if c := cur[f.Domain]; c != nil && c.file == f && c.stamp == stampOf(f) {
			next[f.Domain] = c
			continue
		}
		stamp := stampOf(f)
		cert, leaf, err := LoadFiles(f)
		if err != nil {
			// A change is checked before it is stored (CheckFiles); this
			// is a start with files gone since (a volume not mounted
			// yet): the rest of moat serves, this domain fails its
			// handshakes and is retried at each look.
			m.log.Error("certificate files: cannot load; retrying", "domain", f.Domain, "err", err)
			next[f.Domain] = &fileCert{file: f, stamp: stamp, problem: err.Error()}
			continue
		}
		next[f.Domain] = &fileCert{file: f, cert: cert, leaf: leaf, stamp: stamp}
	}
	m.mu.Lock()
	m.files = next
	m.mu.Unlock()
	for d := range next {
		m.expiry(d)
	}
	return nil
}

// watchFiles reloads the certificates from files whose files changed,
// every interval, until the Manager closes.
func (m *Manager) watchFiles(interval time.Duration) {
	defer m.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		var changed []*fileCert
		for _, c := range m.files {
			if c.cert == nil || stampOf(c.file) != c.stamp {
				changed = append(changed, c)
			}
		}
		m.mu.Unlock()
		for _, c := range changed {
			m.reload(c)
		}
		m.mu.Lock()
		domains := make([]string, 0, len(m.files))
		for d := range m.files {
			domains = append(domains, d)
		}
		m.mu.Unlock()
		for _, d := range domains {
			m.expiry(d)
		}
	}
}

// reload reads c's files again. A half-written pair (the certificate
// replaced, not yet its key) fails to load and is tried at the next
// tick; the certificate before serves meanwhile.
func (m *Manager) reload(c *fileCert) {
	stamp := stampOf(c.file)
	cert, leaf, err := LoadFiles(c.file)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.files[c.file.Domain] != c {
		return // no longer served from these files
	}
	if err != nil {
		if c.problem != err.Error() {
			m.log.Warn("certificate files: reload failed; the certificate before serves", "domain", c.file.Domain, "err", err)
		}
		c.problem = err.Error()
		return
	}
	next := &fileCert{file: c.file, cert: cert, leaf: leaf, stamp: stamp, warned: c.warned}
	m.files[c.file.Domain] = next
	m.log.Info("certificate files: reloaded", "domain", c.file.Domain, "not_after", leaf.NotAfter)
	go m.opts.OnEvent(Event{Domain: c.file.Domain, Kind: "reloaded", Message: "the certificate from " + c.file.TLS.Cert + " serves now, valid until " + leaf.NotAfter.UTC().Format(time.RFC3339)})
}

// expiry alerts, once per certificate, when one from files expires
// within ExpiryWarning.
func (m *Manager) expiry(domain string) {
	m.mu.Lock()
	c := m.files[domain]
	if c == nil || c.leaf == nil || time.Until(c.leaf.NotAfter) > ExpiryWarning || c.warned.Equal(c.leaf.NotAfter) {
		m.mu.Unlock()
		return
	}
	c.warned = c.leaf.NotAfter
	m.mu.Unlock()
	m.opts.OnEvent(Event{Domain: domain, Kind: "expiring", Alert: true, Message: expiring(c)})
}

func expiring(c *fileCert) string {
	left := time.Until(c.leaf.NotAfter)
	when := "expired"
	if left > 0 {
		when = fmt.Sprintf("expires in %d days", int(left.Hours()/24))
	}
	return fmt.Sprintf("the certificate from %s %s (%s), and moat does not renew a certificate you keep in files: replace the files (moat reloads them by itself)", c.file.TLS.Cert, when, c.leaf.NotAfter.UTC().Format(time.RFC3339))
}

// fileStatus is a certificate from files as Status reports it.
func fileStatus(c *fileCert) Status {
	if c.leaf == nil {
		return Status{Domain: c.file.Domain, State: Failed, Message: "cannot be loaded: " + c.problem}
	}
	s := Status{Domain: c.file.Domain, State: Valid, NotAfter: c.leaf.NotAfter, Since: c.leaf.NotBefore, Message: "from " + c.file.TLS.Cert}
	if time.Until(c.leaf.NotAfter) <= ExpiryWarning {
		s.Message += "; " + expiring(c)
	}
	if c.problem != "" {
		s.State = RenewalFailed
		s.Message = "reloading failed: " + c.problem + "; the certificate before serves"
	}
	return s
}
