package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"strconv"
	"strings"
)

// Mail is the SMTP relay the apps send their mail through, and how moat
// delivers it.
type Mail struct {
	// Off turns the relay off: nothing listens, nothing is delivered
	// (queued mail waits).
	Off bool `yaml:"off,omitempty" json:"off,omitempty"`
	// Listen lists the addresses the relay listens on, like
	// 127.0.0.1:587 or 172.17.0.1:587. Empty: port 587 on loopback and on
	// every private address of the server (RFC 1918, RFC 6598, fc00::/7,
	// the Docker bridges), found again as interfaces come and go. A
	// public address is refused: the relay is for the apps on this server.
	Listen []string `yaml:"listen,omitempty" json:"listen,omitempty"`
	// Domain is the domain the apps send from, as <app>@<domain>; the
	// server's domain when empty.
	Domain string `yaml:"domain,omitempty" json:"domain,omitempty"`
	// PerAppHourly is how many messages an app may send in an hour, each
	// recipient of a message counting once; 300 when zero.
	PerAppHourly int `yaml:"per_app_hourly,omitempty" json:"per_app_hourly,omitempty"`
	// MaxSize is the largest message accepted, in bytes; 25 MiB when zero.
	MaxSize int64 `yaml:"max_size,omitempty" json:"max_size,omitempty"`
	// MaxRecipients is how many recipients one message may have; 50 when
	// zero.
	MaxRecipients int `yaml:"max_recipients,omitempty" json:"max_recipients,omitempty"`
	// Smarthost, when its host is set, is the provider every message is
	// handed to (SES, Mailgun, SendGrid, Brevo, ...). Without one, moat
	// delivers to each recipient's MX itself, signed with DKIM.
	Smarthost Smarthost `yaml:"smarthost,omitempty" json:"smarthost,omitempty"`
}

// Smarthost is a mail provider's submission server.
type Smarthost struct {
	// Host is the provider's SMTP server, like email-smtp.eu-west-1.amazonaws.com.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// Port is 587 (STARTTLS, required) when zero; 465 is implicit TLS.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Username and Password log in to the provider (AUTH PLAIN, over TLS
	// only). The password is never shown in plans or the activity log.
	Username string `yaml:"username,omitempty" json:"username,omitempty"`
	Password string `yaml:"password,omitempty" json:"password,omitempty"`
	// CARoots is a PEM file of roots to trust for the smarthost's
	// certificate, for a relay of your own with a private CA; empty
	// means the system's roots.
	CARoots string `yaml:"ca_roots,omitempty" json:"ca_roots,omitempty"`
}

// Defaults of the mail relay.
const (
	DefaultMailPort          = 587
	DefaultMailPerAppHourly  = 300
	DefaultMailMaxSize       = 25 << 20
	DefaultMailMaxRecipients = 50
	// MaxMailSize is the largest message size that may be configured.
	MaxMailSize = 100 << 20
)

// MailDomain is the domain apps send from: mail.domain, else the
// server's domain.
func (s State) MailDomain() string { return or(s.Mail.Domain, s.Server.Domain) }

// HourlyLimit is mail.per_app_hourly with its default.
func (m Mail) HourlyLimit() int {
	if m.PerAppHourly == 0 {
		return DefaultMailPerAppHourly
	}
	return m.PerAppHourly
}

// SizeLimit is mail.max_size with its default.
func (m Mail) SizeLimit() int64 {
	if m.MaxSize == 0 {
		return DefaultMailMaxSize
	}
	return m.MaxSize
}

// RecipientLimit is mail.max_recipients with its default.
func (m Mail) RecipientLimit() int {
	if m.MaxRecipients == 0 {
		return DefaultMailMaxRecipients
	}
	return m.MaxRecipients
}

// SmarthostAddr is the smarthost's host:port, empty without one.
func (m Mail) SmarthostAddr() string {
	if m.Smarthost.Host == "" {
		return ""
	}
	p := m.Smarthost.Port
	if p == 0 {
		p = DefaultMailPort
	}
	return net.JoinHostPort(m.Smarthost.Host, strconv.Itoa(p))
}

// NotifyEmail is where alerts are mailed: server.notify.email, else the
// server's contact email; empty means no mail.
func (s State) NotifyEmail() []string {
	if len(s.Server.Notify.Email) > 0 {
		return s.Server.Notify.Email
	}
	if s.Server.Email != "" {
		return []string{s.Server.Email}
	}
	return nil
}

func (m Mail) clone() Mail {
	m.Listen = append([]string(nil), m.Listen...)
	return m
}

func (s *State) normalizeMail() {
	s.Mail.Domain = normalHost(s.Mail.Domain)
	s.Mail.Smarthost.Host = normalHost(s.Mail.Smarthost.Host)
	for i, e := range s.Server.Notify.Email {
		s.Server.Notify.Email[i] = strings.TrimSpace(e)
	}
}

// Hidden stands for a secret in a state shown to someone who may not
// read it; a state written back with it keeps the secret it hid.
const Hidden = "(hidden)"

// redacted is the mail settings as plans and the activity log show them:
// the smarthost's password is a secret.
func (m Mail) redacted() Mail {
	m = m.clone()
	if m.Smarthost.Password != "" {
		m.Smarthost.Password = Hidden
	}
	return m
}

// Redacted is s with its secrets (the smarthost's password) replaced by
// Hidden, for readers off the server.
func (s State) Redacted() State {
	s.Mail = s.Mail.redacted()
	return s
}

// KeepSecrets puts back the secrets of old where s has Hidden, so that a
// redacted state written back changes no secret.
func (s *State) KeepSecrets(old State) {
	if s.Mail.Smarthost.Password == Hidden {
		s.Mail.Smarthost.Password = old.Mail.Smarthost.Password
	}
}

// mailStep is the plan step for the mail settings, without the password;
// a changed password is said to have changed.
func mailStep(from, to Mail) (Step, bool) {
	f := diffFields(flatten(from.redacted()), flatten(to.redacted()))
	if from.Smarthost.Password != to.Smarthost.Password && from.Smarthost.Password != "" && to.Smarthost.Password != "" {
		f = append(f, "smarthost.password: (changed)")
	}
	if len(f) == 0 {
		return Step{}, false
	}
	return Step{Op: Change, Object: "mail", Fields: f, Before: mustJSON(from.redacted()), After: mustJSON(to.redacted())}, true
}

// PrivateAddr reports whether a is loopback or on a private network:
// RFC 1918, RFC 6598 (carrier-grade NAT), IPv6 unique local (fc00::/7),
// or link-local.
func PrivateAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || cgnat.Contains(a)
}

// cgnat is RFC 6598's shared address space.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

func (s State) validateMail(add func(field, value, problem, fix string)) {
	m := s.Mail
	for i, l := range m.Listen {
		at := fmt.Sprintf("mail.listen[%d]", i)
		ap, err := netip.ParseAddrPort(l)
		switch {
		case err != nil:
			add(at, l, "is not an IP address with a port", "write an address and port, like 127.0.0.1:587 or 172.17.0.1:587")
		case ap.Addr().IsUnspecified():
			add(at, l, "listens on every address, public ones included", "name the private addresses the apps reach, like 127.0.0.1:587, or leave mail.listen out to use loopback and every private address")
		case !PrivateAddr(ap.Addr()):
			add(at, l, "is a public address: anyone on the internet could reach the relay", "listen on loopback or a private address, like 127.0.0.1:587; the relay is for the apps on this server")
		case ap.Port() == 0:
			add(at, l, "has no port", "write the port, like "+ap.Addr().String()+":587")
		}
	}
	if d := m.Domain; d != "" {
		if p, fix := CheckHostname(d); p != "" {
			add("mail.domain", d, p, fix)
		}
	}
	if m.PerAppHourly < 0 || m.PerAppHourly > 1_000_000 {
		add("mail.per_app_hourly", fmt.Sprint(m.PerAppHourly), "is not from 1 to 1000000", "write how many messages an app may send in an hour, like 300")
	}
	if m.MaxSize < 0 || m.MaxSize > MaxMailSize {
		add("mail.max_size", fmt.Sprint(m.MaxSize), fmt.Sprintf("is not from 1 to %d bytes", MaxMailSize), "write the largest message in bytes, like 26214400 for 25 MiB")
	} else if m.MaxSize > 0 && m.MaxSize < 1024 {
		add("mail.max_size", fmt.Sprint(m.MaxSize), "is smaller than 1024 bytes, less than the headers of one message", "write the largest message in bytes, like 26214400 for 25 MiB")
	}
	if m.MaxRecipients < 0 || m.MaxRecipients > 1000 {
		add("mail.max_recipients", fmt.Sprint(m.MaxRecipients), "is not from 1 to 1000", "write how many recipients a message may have, like 50")
	}
	sh := m.Smarthost
	switch {
	case sh.Host == "" && (sh.Port != 0 || sh.Username != "" || sh.Password != ""):
		add("mail.smarthost.host", "", "is missing, but the smarthost's other settings are given", "write the provider's SMTP server, like email-smtp.eu-west-1.amazonaws.com, or remove mail.smarthost")
	case sh.Host != "":
		if _, err := netip.ParseAddr(sh.Host); err != nil {
			if p, fix := CheckHostname(sh.Host); p != "" {
				add("mail.smarthost.host", sh.Host, p, fix)
			}
		} else {
			add("mail.smarthost.host", sh.Host, "is an IP address, so its certificate cannot be checked", "write the provider's host name, like smtp.mailgun.org")
		}
		if sh.Port < 0 || sh.Port > 65535 || sh.Port == 25 {
			add("mail.smarthost.port", fmt.Sprint(sh.Port), "is not a submission port", "use 587 (STARTTLS) or 465 (TLS)")
		}
		if (sh.Username == "") != (sh.Password == "") {
			add("mail.smarthost.username", sh.Username, "is given without a password, or a password without it", "give both the provider's SMTP username and password, or neither")
		}
		if r := sh.CARoots; r != "" && !strings.HasPrefix(r, "/") {
			add("mail.smarthost.ca_roots", r, "is not an absolute path", "write the full path of a PEM file, like /etc/moat/relay-ca.pem")
		}
		if strings.ContainsAny(sh.Username+sh.Password, "\r\n\x00") {
			add("mail.smarthost.password", Hidden, "contains a line break or NUL", "paste the provider's credentials without line breaks")
		}
	}
	for i, e := range s.Server.Notify.Email {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e || a.Name != "" {
			add(fmt.Sprintf("server.notify.email[%d]", i), e, "is not an email address", "write a plain address like owner@example.com")
		}
	}
}
