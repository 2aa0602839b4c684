package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/config"
	"moat/internal/mail"
	"moat/internal/maildns"
	"moat/internal/notify"
	"moat/internal/store"
)

// mailer is the daemon's mail layer: the relay the apps submit to, the
// delivery of what it queued, and moat's own alerts by email.
type mailer struct {
	relay    *mail.Relay
	delivery *mail.Delivery
	// alerts folds repeats of an incident before they are mailed.
	alerts *notify.Fold

	mu   sync.Mutex
	to   []string // who alerts are mailed to
	from string   // moat@<mail domain>
	host string   // the server's name, for EHLO and messages

	selfSigned func() (*tls.Certificate, error)
}

// startMail makes the mail layer; configureMail gives it its settings
// and runMail starts it.
func (d *Daemon) startMail(reg prometheus.Registerer) {
	m := &mailer{}
	m.selfSigned = sync.OnceValues(func() (*tls.Certificate, error) { return selfSigned(d.mailHost()) })
	metrics := mail.NewMetrics(reg, d.store)
	m.delivery = mail.NewDelivery(mail.DeliveryOptions{
		Spool: d.store, Log: d.log, Metrics: metrics,
		Record: func(ctx context.Context, action, target, detail string) {
			if err := d.store.Record(ctx, store.Entry{Who: "moat", From: "mail", Action: action, Target: target, Detail: detail}); err != nil {
				d.log.Error("activity log", "err", err)
			}
		},
	})
	m.relay = mail.NewRelay(mail.RelayOptions{
		Store: d.store, Log: d.log, Metrics: metrics,
		TLS: &tls.Config{GetCertificate: d.mailCert, MinVersion: tls.VersionTLS12},
		Fail: func(ctx context.Context, addr netip.Addr, detail string) {
			d.warden.Fail(ctx, config.JailMail, addr, detail)
		},
		Queued:   m.delivery.Kick,
		SpoolDir: d.opts.DataDir,
		Listen:   d.opts.MailListen,
	})
	m.alerts = &notify.Fold{Next: notify.Func(d.mailAlert)}
	d.mail = m
	if err := m.relay.Restore(context.Background()); err != nil {
		d.log.Error("mail: the last hour's messages were not counted against the quotas", "err", err)
	}
}

// Kick implements api.Mail.
func (m *mailer) Kick() { m.delivery.Kick() }

// Addrs implements api.Mail.
func (m *mailer) Addrs() []string { return m.relay.Addrs() }

// runMail serves the relay and delivers until the daemon stops; the
// returned function waits for both to finish once ctx ends.
func (d *Daemon) runMail(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.mail.relay.Run(ctx, 30*time.Second) }()
	go func() { defer wg.Done(); d.mail.delivery.Run(ctx) }()
	return wg.Wait
}

// mailHost is the server's name as mail shows it.
func (d *Daemon) mailHost() string {
	d.mail.mu.Lock()
	defer d.mail.mu.Unlock()
	return d.mail.host
}

// configureMail gives the relay and the delivery the state's settings.
func (d *Daemon) configureMail(ctx context.Context, s config.State) {
	m := d.mail
	domain := s.MailDomain()
	host := s.Server.Domain
	if host == "" {
		host, _ = os.Hostname()
	}
	m.mu.Lock()
	m.to = s.NotifyEmail()
	m.from = "moat@" + domain
	m.host = host
	m.mu.Unlock()
	set := mail.Settings{
		Off: s.Mail.Off, Domain: domain, Apps: map[string]bool{},
		Hourly: s.Mail.HourlyLimit(), MaxSize: s.Mail.SizeLimit(), MaxRecipients: s.Mail.RecipientLimit(),
	}
	for _, a := range s.Apps {
		set.Apps[a.Name] = true
	}
	for _, l := range s.Mail.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil {
			set.Listen = append(set.Listen, ap)
		}
	}
	if d.opts.Demo != nil && len(set.Listen) == 0 {
		// The demo needs no root: a high port on loopback.
		set.Listen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2525")}
	}
	if err := m.relay.Configure(set); err != nil {
		d.log.Error("mail relay", "err", err)
	}
	if s.Mail.Off || domain == "" {
		m.delivery.Configure(nil, domain)
		return
	}
	t, err := d.transport(ctx, s, host)
	if err != nil {
		d.log.Error("mail: nothing is delivered until this is fixed", "err", err)
	}
	m.delivery.Configure(t, domain)
}

// transport is where the state sends mail: its smarthost, or each
// recipient's MX with the stored DKIM keys.
func (d *Daemon) transport(ctx context.Context, s config.State, host string) (mail.Transport, error) {
	if addr := s.Mail.SmarthostAddr(); addr != "" {
		var cfg *tls.Config
		if s.Mail.Smarthost.CARoots != "" {
			pool, err := loadPool(s.Mail.Smarthost.CARoots)
			if err != nil {
				return nil, err
			}
			cfg = &tls.Config{RootCAs: pool}
		}
		return mail.Smarthost{Addr: addr, Username: s.Mail.Smarthost.Username, Password: s.Mail.Smarthost.Password, TLS: cfg, Hostname: host, Resolver: s.Server.Resolver, Dial: d.opts.MailDial}, nil
	}
	keys, err := d.dkimKeys(ctx)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		d.log.Warn("mail: no DKIM keys yet, so direct mail goes out unsigned and is likely to be taken for spam; run moat mail setup")
	}
	return mail.Direct{Resolver: s.Server.Resolver, Port: d.opts.MailMXPort, Hostname: host, Domain: s.MailDomain(), Keys: keys, Dial: d.opts.MailDial}, nil
}

// dkimKeys reads the stored DKIM keys.
func (d *Daemon) dkimKeys(ctx context.Context) ([]maildns.Key, error) {
	raw, err := d.store.DKIMKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []maildns.Key
	for _, sel := range slices.Sorted(maps.Keys(raw)) {
		k, err := maildns.ParseKey(sel, raw[sel])
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mail.smarthost.ca_roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("mail.smarthost.ca_roots: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// checkMail refuses mail settings the daemon could not serve: a listen
// address it cannot bind, a roots file it cannot read.
func (d *Daemon) checkMail(s config.State) error {
	if r := s.Mail.Smarthost.CARoots; r != "" && s.Mail.Smarthost.Host != "" {
		if _, err := loadPool(r); err != nil {
			return &config.FieldError{Field: "mail.smarthost.ca_roots", Value: r, Problem: "cannot be read as PEM roots (" + err.Error() + ")", Fix: "give a PEM file of the roots that signed the smarthost's certificate"}
		}
	}
	if s.Mail.Off {
		return nil
	}
	listening := d.mail.relay.Addrs()
	for i, l := range s.Mail.Listen {
		if slices.Contains(listening, l) {
			continue
		}
		listen := d.opts.MailListen
		if listen == nil {
			listen = net.Listen
		}
		ln, err := listen("tcp", l)
		if err == nil {
			ln.Close()
		} else {
			return &config.FieldError{Field: fmt.Sprintf("mail.listen[%d]", i), Value: l, Problem: "cannot be listened on (" + err.Error() + ")", Fix: "choose an address this server has and a free port"}
		}
	}
	return nil
}

// mailCert is the relay's certificate for STARTTLS: moat's certificate
// for the server's name when it holds one, else the admin host's (which
// moat orders), else a self-signed one. Apps on this server reach the
// relay by an IP address, so most cannot check a name either way; TLS
// keeps their password off the wire.
func (d *Daemon) mailCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	d.mu.Lock()
	admin := d.adminHost
	d.mu.Unlock()
	for _, host := range []string{d.mailHost(), admin} {
		if host == "" {
			continue
		}
		h := *hello
		h.ServerName = host
		if c, err := d.certs.GetCertificate(&h); err == nil && c != nil {
			return c, nil
		}
	}
	return d.mail.selfSigned()
}

// selfSigned makes a certificate for name, valid for a year.
func selfSigned(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = "localhost"
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("mail relay certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// mailAlert mails one alert to the owner through the queue, so that it
// is not lost while the smarthost or the owner's MX is down.
func (d *Daemon) mailAlert(ctx context.Context, a notify.Alert) error {
	m := d.mail
	m.mu.Lock()
	to, from, host := m.to, m.from, m.host
	m.mu.Unlock()
	if len(to) == 0 || from == "moat@" {
		return nil
	}
	subject := fmt.Sprintf("[moat %s] %s: %s", host, a.Kind, a.Subject)
	body := fmt.Sprintf("%s\n\nWhat: %s\nAbout: %s\nWhen: %s\nServer: %s\n\nmoat sends one mail per incident an hour; moat activity shows every event.\n",
		a.Message, a.Kind, a.Subject, a.At.UTC().Format(time.RFC1123), host)
	if err := d.submitOwn(ctx, from, to, subject, body); err != nil {
		return fmt.Errorf("email alert: %w", err)
	}
	return nil
}
