// Package config is moat's desired state as a person writes it: the schema of
// moat.yaml, the defaults of DESIGN.md, validation whose errors name the
// field, the value and the fix, and the plan that says what a change does.
//
// It holds no state of its own and touches nothing on the host; the store
// keeps a State, reconcilers make the host match it.
package config

import (
	"strings"
	"time"
)

// Defaults that apply where the state leaves a field empty.
const (
	DefaultHTTPAddr    = ":80"
	DefaultHTTPSAddr   = ":443"
	DefaultAdminAddr   = "127.0.0.1:9180"
	DefaultCacheTTL    = 3 * time.Second
	LetsEncrypt        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// State is the whole desired state of one moat server. `moat apply -f`
// replaces it, `moat export` writes it out; both round-trip.
type State struct {
	// Server holds the settings of the machine itself.
	Server Server `yaml:"server" json:"server"`
	// Apps are the applications behind the edge, by name.
	Apps []App `yaml:"apps,omitempty" json:"apps,omitempty"`
	// Firewall is the network firewall: which ports are open, to whom.
	Firewall Firewall `yaml:"firewall,omitempty" json:"firewall,omitempty"`
	// Guard is the brute-force guard: which logs are read, what bans.
	Guard Guard `yaml:"guard,omitempty" json:"guard,omitempty"`
	// SSH is what moat manages of OpenSSH: keys by title.
	SSH SSH `yaml:"ssh,omitempty" json:"ssh,omitempty"`
	// Mail is the SMTP relay for the apps' mail and moat's own.
	Mail Mail `yaml:"mail,omitempty" json:"mail,omitempty"`
	// Auth sets how people sign in to the dashboard and the HTTPS API.
	Auth Auth `yaml:"auth,omitempty" json:"auth,omitempty"`
	// Backup is where backups go, and how many are kept.
	Backup Backup `yaml:"backup,omitempty" json:"backup,omitempty"`
}

// Server holds the settings that are not about one app.
type Server struct {
	// Domain is the server's own name, for moat's own pages and mail.
	Domain string `yaml:"domain,omitempty" json:"domain,omitempty"`
	// AdminDomain is where the dashboard and the HTTPS API answer, with
	// a certificate like any app's: moat.<domain> when empty; "off"
	// serves them nowhere (the control socket stays).
	AdminDomain string `yaml:"admin_domain,omitempty" json:"admin_domain,omitempty"`
	// TLS serves the admin host from the owner's certificate files
	// instead of ordering a certificate.
	TLS TLS `yaml:"tls,omitempty" json:"tls,omitzero"`
	// Email is the ACME account contact and where alerts go.
	Email string `yaml:"email,omitempty" json:"email,omitempty"`
	// Listen sets the edge's addresses; empty fields mean :80 and :443.
	Listen Listen `yaml:"listen,omitempty" json:"listen,omitempty"`
	// ACME sets where certificates come from.
	ACME ACME `yaml:"acme,omitempty" json:"acme,omitempty"`
	// PublicIPs are the addresses this server is reached at. The DNS
	// pre-check compares a domain's records with them; when empty, moat
	// uses the machine's global addresses and a probe over HTTP.
	PublicIPs []string `yaml:"public_ips,omitempty" json:"public_ips,omitempty"`
	// Resolver is a DNS server (host:port) for the pre-check and for
	// mail (the smarthost, MX records, moat mail check); empty means the
	// system's resolver.
	Resolver string `yaml:"resolver,omitempty" json:"resolver,omitempty"`
	// Notify says where alerts (a failed issuance or renewal) go besides
	// the activity log.
	Notify Notify `yaml:"notify,omitempty" json:"notify,omitempty"`
	// RateLimit is the limit per client IP for every app that sets none:
	// 150 requests per minute by default.
	RateLimit RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// TrustedProxies are the addresses (CIDRs) of proxies in front of moat
	// whose X-Forwarded-For is believed; from anyone else it is ignored.
	TrustedProxies []string `yaml:"trusted_proxies,omitempty" json:"trusted_proxies,omitempty"`
	// Cloudflare believes CF-Connecting-IP from Cloudflare's ranges.
	Cloudflare Cloudflare `yaml:"cloudflare,omitempty" json:"cloudflare,omitempty"`
	// AccessLog turns the JSON access log off with "off"; on by default.
	AccessLog string `yaml:"access_log,omitempty" json:"access_log,omitempty"`
	// Protect is the host's termination protection: while on, moat
	// refuses to reboot or power off the server, and holds a shutdown
	// inhibitor where systemd-logind runs.
	Protect bool `yaml:"protect,omitempty" json:"protect,omitempty"`
}

// RateLimit limits requests per client IP. A zero value means the default
// (150 per minute) on the server and "as the server" on an app.
type RateLimit struct {
	// Requests is how many requests a client may make per Per.
	Requests int `yaml:"requests,omitempty" json:"requests,omitempty"`
	// Per is "second", "minute" or a duration like 10s.
	Per string `yaml:"per,omitempty" json:"per,omitempty"`
	// Burst is how many may come at once; Requests by default.
	Burst int `yaml:"burst,omitempty" json:"burst,omitempty"`
	// Off turns the limit off (for an app: for that app only).
	Off bool `yaml:"off,omitempty" json:"off,omitempty"`
	// IPv6Prefix is how many leading bits of an IPv6 address make one
	// client (64 by default), so a client cannot rotate through its own
	// subnet. Server only.
	IPv6Prefix int `yaml:"ipv6_prefix,omitempty" json:"ipv6_prefix,omitempty"`
	// Allow lists addresses and CIDRs that are never limited. Server only.
	Allow []string `yaml:"allow,omitempty" json:"allow,omitempty"`
}

// Cloudflare configures the Cloudflare mode of the real-IP step.
type Cloudflare struct {
	// Enabled believes CF-Connecting-IP from Cloudflare's ranges.
	Enabled bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	// Ranges replaces the built-in list of Cloudflare's ranges.
	Ranges []string `yaml:"ranges,omitempty" json:"ranges,omitempty"`
}

// Cache is an app's output cache.
type Cache struct {
	// TTL is how long a response is kept, like 3s (the default); 0s
	// turns the cache off for the app.
	TTL string `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// AllowCookies caches requests that carry cookies, for apps whose
	// cookies do not personalise pages. Off by default: a personalised
	// page must never reach another user.
	AllowCookies bool `yaml:"allow_cookies,omitempty" json:"allow_cookies,omitempty"`
	// HideXCache drops the X-Cache response header.
	HideXCache bool `yaml:"hide_x_cache,omitempty" json:"hide_x_cache,omitempty"`
}

// Listen holds the edge's listen addresses.
type Listen struct {
	// HTTP serves ACME HTTP-01 challenges and redirects everything else.
	HTTP string `yaml:"http,omitempty" json:"http,omitempty"`
	// HTTPS serves the apps.
	HTTPS string `yaml:"https,omitempty" json:"https,omitempty"`
	// Admin serves metrics; never on the public ports. 127.0.0.1:9180 by
	// default.
	Admin string `yaml:"admin,omitempty" json:"admin,omitempty"`
}

// ACME configures the certificate authority.
type ACME struct {
	// Directory is the CA's ACME directory URL; Let's Encrypt by default.
	Directory string `yaml:"directory,omitempty" json:"directory,omitempty"`
	// CARoots is a PEM file of roots to trust for the directory's own
	// HTTPS, for a private CA; empty means the system's roots.
	CARoots string `yaml:"ca_roots,omitempty" json:"ca_roots,omitempty"`
	// Challenges lists the challenge types moat may use: http-01 and
	// tls-alpn-01 (both by default).
	Challenges []string `yaml:"challenges,omitempty" json:"challenges,omitempty"`
}

// Notify lists alert destinations.
type Notify struct {
	// Webhook receives a JSON POST for every alert.
	Webhook string `yaml:"webhook,omitempty" json:"webhook,omitempty"`
	// Email lists who is mailed every alert, once per incident an hour;
	// the server's contact email when empty.
	Email []string `yaml:"email,omitempty" json:"email,omitempty"`
}

// App is one application behind the edge.
type App struct {
	// Name identifies the app: lowercase letters, digits and hyphens.
	Name string `yaml:"name" json:"name"`
	// Domains are the host names the edge routes to this app and gets
	// certificates for.
	Domains []string `yaml:"domains" json:"domains"`
	// Upstream is where the app listens, like http://127.0.0.1:3000.
	Upstream string `yaml:"upstream" json:"upstream"`
	// Headers overrides the security headers for this app: a value
	// replaces the default, an empty value removes the header.
	Headers map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
	// RateLimit overrides the server's limit for this app.
	RateLimit RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// TLS serves the app's domains from the owner's certificate files
	// instead of ordering a certificate.
	TLS TLS `yaml:"tls,omitempty" json:"tls,omitzero"`
	// Cache configures the app's output cache.
	Cache Cache `yaml:"cache,omitempty" json:"cache,omitempty"`
	// Ports are the ports the app itself listens on beside the edge (a
	// database, a game server), and who may reach them.
	Ports []AppPort `yaml:"ports,omitempty" json:"ports,omitempty"`
	// GuardStatuses, like [401, 403], makes the app's answers with these
	// statuses count as failed logins: a client that gets too many is
	// banned by the guard's jail named after the app (tuned by an entry
	// of guard.jails with the app's name). Empty: the app's answers are
	// not counted.
	GuardStatuses []int `yaml:"guard_statuses,omitempty" json:"guard_statuses,omitempty"`
	// Access is public (the default: anyone reaches the app) or private:
	// only people signed in to moat (with their second step) reach it,
	// and the app is told who they are (X-Moat-User, X-Moat-Email).
	Access string `yaml:"access,omitempty" json:"access,omitempty"`
	// Allow, for a private app, lists who may use it: emails and roles
	// (admin, operator, viewer). Empty: every account.
	Allow []string `yaml:"allow,omitempty" json:"allow,omitempty"`
	// Data are the app's data paths: what its backup holds.
	Data []string `yaml:"data,omitempty" json:"data,omitempty"`
	// Run is how moat starts, stops, restarts, upgrades, removes and
	// asks after the app.
	Run Run `yaml:"run,omitempty" json:"run,omitempty"`
	// Protect is termination protection: while on, moat refuses to stop,
	// restart, upgrade or remove the app.
	Protect bool `yaml:"protect,omitempty" json:"protect,omitempty"`
	// Backup is when the app's data is backed up by itself.
	Backup AppBackup `yaml:"backup,omitempty" json:"backup,omitempty"`
}

// The values of App.Access.
const (
	AccessPublic  = "public"
	AccessPrivate = "private"
)

// Roles are the accounts' roles, as App.Allow may name them.
var Roles = []string{"admin", "operator", "viewer"}

// Private reports whether the app is behind moat's sign-in.
func (a App) Private() bool { return a.Access == AccessPrivate }

// Allows reports whether an account (its email and role) may use the
// private app.
func (a App) Allows(email, role string) bool {
	if len(a.Allow) == 0 {
		return true
	}
	for _, w := range a.Allow {
		if strings.EqualFold(w, email) || w == role {
			return true
		}
	}
	return false
}

// App returns the app with that name.
func (s *State) App(name string) (*App, bool) {
	for i := range s.Apps {
		if s.Apps[i].Name == name {
			return &s.Apps[i], true
		}
	}
	return nil, false
}

// Domains lists every app domain, in app order.
func (s *State) Domains() []string {
	var out []string
	for _, a := range s.Apps {
		out = append(out, a.Domains...)
	}
	return out
}

// Clone returns a deep copy, so a change can be tried without touching s.
func (s State) Clone() State {
	c := s
	c.Server.PublicIPs = append([]string(nil), s.Server.PublicIPs...)
	c.Server.ACME.Challenges = append([]string(nil), s.Server.ACME.Challenges...)
	c.Server.TrustedProxies = append([]string(nil), s.Server.TrustedProxies...)
	c.Server.Cloudflare.Ranges = append([]string(nil), s.Server.Cloudflare.Ranges...)
	c.Server.RateLimit = s.Server.RateLimit.clone()
	c.Firewall = s.Firewall.clone()
	c.Guard = s.Guard.clone()
	c.SSH = s.SSH.clone()
	c.Mail = s.Mail.clone()
	c.Backup.Repositories = append([]Repository(nil), s.Backup.Repositories...)
	c.Server.Notify.Email = append([]string(nil), s.Server.Notify.Email...)
	c.Apps = make([]App, len(s.Apps))
	for i, a := range s.Apps {
		c.Apps[i] = a.Clone()
	}
	if s.Apps == nil {
		c.Apps = nil
	}
	return c
}

// Clone returns a deep copy of the app.
func (a App) Clone() App {
	c := a
	c.Domains = append([]string(nil), a.Domains...)
	c.RateLimit = a.RateLimit.clone()
	c.GuardStatuses = append([]int(nil), a.GuardStatuses...)
	c.Allow = append([]string(nil), a.Allow...)
	c.Data = append([]string(nil), a.Data...)
	if a.Ports != nil {
		c.Ports = make([]AppPort, len(a.Ports))
		for i, p := range a.Ports {
			c.Ports[i] = p
			c.Ports[i].From = append([]string(nil), p.From...)
		}
	}
	if a.Headers != nil {
		c.Headers = make(map[string]string, len(a.Headers))
		for k, v := range a.Headers {
			c.Headers[k] = v
		}
	}
	return c
}

// HTTPAddr is the HTTP listen address with its default.
func (s Server) HTTPAddr() string { return or(s.Listen.HTTP, DefaultHTTPAddr) }

// AdminAddr is the admin (metrics) listen address with its default.
func (s Server) AdminAddr() string { return or(s.Listen.Admin, DefaultAdminAddr) }

// HTTPSAddr is the HTTPS listen address with its default.
func (s Server) HTTPSAddr() string { return or(s.Listen.HTTPS, DefaultHTTPSAddr) }

// DirectoryURL is the ACME directory with its default.
func (a ACME) DirectoryURL() string { return or(a.Directory, LetsEncrypt) }

// Allows reports whether the challenge type may be used.
func (a ACME) Allows(challenge string) bool {
	if len(a.Challenges) == 0 {
		return true
	}
	for _, c := range a.Challenges {
		if c == challenge {
			return true
		}
	}
	return false
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (r RateLimit) clone() RateLimit {
	r.Allow = append([]string(nil), r.Allow...)
	return r
}

// CacheTTL is the app's cache TTL with its default; 0 means off. The value
// was validated.
func (a App) CacheTTL() time.Duration {
	if a.Cache.TTL == "" {
		return DefaultCacheTTL
	}
	d, _ := time.ParseDuration(a.Cache.TTL)
	return d
}

// PerDuration is the rate limit's period; the value was validated.
func (r RateLimit) PerDuration() time.Duration {
	switch r.Per {
	case "", "minute":
		return time.Minute
	case "second":
		return time.Second
	}
	d, _ := time.ParseDuration(r.Per)
	return d
}
