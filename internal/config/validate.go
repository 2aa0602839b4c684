package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is a refusal that names the field, the value and the fix.
type FieldError struct {
	Field   string // path in moat.yaml, like apps[2].domains[0]
	Value   string
	Problem string
	Fix     string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %q %s: %s", e.Field, e.Value, e.Problem, e.Fix)
}

var (
	appName    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	hostLabel  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Normalize rewrites what has one meaning in several spellings (case of
// host names, trailing dots, header name case) so that comparing two states
// compares what they mean.
func (s *State) Normalize() {
	s.normalizeValues()
	s.sortApps()
}

// normalizeValues is Normalize without reordering the apps, so that Parse
// can validate with the indexes of the file the user wrote.
func (s *State) normalizeValues() {
	s.Server.Domain = normalHost(s.Server.Domain)
	s.normalizeFirewall()
	s.normalizeGuard()
	s.normalizeSSH()
	s.normalizeMail()
	s.normalizeAuth()
	for i := range s.Apps {
		a := &s.Apps[i]
		for j, d := range a.Domains {
			a.Domains[j] = normalHost(d)
		}
		if len(a.Headers) > 0 {
			// Names that differ only in case are one header written twice:
			// canonicalizing them would keep one value at random, so they
			// stay as written for Validate to refuse.
			spellings := make(map[string]int, len(a.Headers))
			for k := range a.Headers {
				spellings[canonicalHeader(k)]++
			}
			h := make(map[string]string, len(a.Headers))
			for k, v := range a.Headers {
				if c := canonicalHeader(k); spellings[c] == 1 {
					k = c
				}
				h[k] = v
			}
			a.Headers = h
		}
	}
}

func (s *State) sortApps() {
	slices.SortStableFunc(s.Apps, func(a, b App) int { return strings.Compare(a.Name, b.Name) })
}

func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

func canonicalHeader(k string) string {
	if !headerName.MatchString(k) {
		return k // left as is, for Validate to refuse
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

// Validate checks the whole state and returns every problem at once, each a
// *FieldError, joined.
func (s *State) Validate() error {
	var errs []error
	add := func(field, value, problem, fix string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Problem: problem, Fix: fix})
	}
	sv := s.Server
	if sv.Domain != "" {
		if p, fix := CheckHostname(sv.Domain); p != "" {
			add("server.domain", sv.Domain, p, fix)
		}
	}
	if sv.Email != "" {
		if a, err := mail.ParseAddress(sv.Email); err != nil || a.Address != sv.Email || a.Name != "" {
			add("server.email", sv.Email, "is not an email address", "write a plain address like admin@example.com")
		}
	}
	for _, f := range []struct{ field, v string }{{"server.listen.http", sv.Listen.HTTP}, {"server.listen.https", sv.Listen.HTTPS}, {"server.listen.admin", sv.Listen.Admin}} {
		if f.v != "" {
			if p := checkListen(f.v); p != "" {
				add(f.field, f.v, p, "write host:port or :port, like :443 or 127.0.0.1:8443")
			}
		}
	}
	// An unset address is its default, so https: ":80" alone collides too.
	if h, hs := sv.HTTPAddr(), sv.HTTPSAddr(); sameSocket(h, hs) {
		if sv.Listen.HTTPS != "" {
			add("server.listen.https", hs, "binds the same port as server.listen.http ("+h+")", "give HTTP and HTTPS different ports")
		} else {
			add("server.listen.http", h, "binds the same port as server.listen.https (default "+hs+")", "give HTTP and HTTPS different ports")
		}
	}
	if d := sv.ACME.Directory; d != "" {
		if p := checkURL(d, "https"); p != "" {
			add("server.acme.directory", d, p, "write the CA's ACME directory URL, like "+LetsEncrypt)
		}
	}
	if r := sv.ACME.CARoots; r != "" && !strings.HasPrefix(r, "/") {
		add("server.acme.ca_roots", r, "is not an absolute path", "write the full path of a PEM file, like /etc/moat/ca.pem")
	}
	for i, c := range sv.ACME.Challenges {
		if c != ChallengeHTTP01 && c != ChallengeTLSALPN01 {
			add(fmt.Sprintf("server.acme.challenges[%d]", i), c, "is not a challenge type moat solves", "use http-01 or tls-alpn-01")
		}
	}
	for i, ip := range sv.PublicIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			add(fmt.Sprintf("server.public_ips[%d]", i), ip, "is not an IP address", "write an IPv4 or IPv6 address, like 203.0.113.7")
		}
	}
	if r := sv.Resolver; r != "" {
		if p := checkHostPort(r); p != "" {
			add("server.resolver", r, p, "write a DNS server's address with its port, like 1.1.1.1:53")
		}
	}
	checkRateLimit("server.rate_limit", sv.RateLimit, true, add)
	for i, p := range sv.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			add(fmt.Sprintf("server.trusted_proxies[%d]", i), p, "is not an IP address or CIDR", "write the proxy's address or network, like 10.0.0.2 or 10.0.0.0/24")
		}
	}
	for i, p := range sv.Cloudflare.Ranges {
		if _, err := ParsePrefix(p); err != nil {
			add(fmt.Sprintf("server.cloudflare.ranges[%d]", i), p, "is not a CIDR", "write a network like 173.245.48.0/20, or leave ranges out to use the built-in list")
		}
	}
	checkTLS("server.tls", sv.TLS, add)
	if l := sv.AccessLog; l != "" && l != "on" && l != "off" {
		add("server.access_log", l, "is neither on nor off", "write on or off")
	}
	if w := sv.Notify.Webhook; w != "" {
		if p := checkURL(w, "http", "https"); p != "" {
			add("server.notify.webhook", w, p, "write the URL that receives alerts, like https://hooks.example.com/moat")
		}
	}

	names := map[string]int{}
	owner := map[string]string{}
	if sv.Domain != "" {
		owner[sv.Domain] = "server.domain"
	}
	for i, a := range s.Apps {
		at := fmt.Sprintf("apps[%d]", i)
		switch {
		case !appName.MatchString(a.Name):
			add(at+".name", a.Name, "is not a valid app name", "use 1 to 32 lowercase letters, digits and hyphens, starting with a letter, like gitea")
		default:
			if j, dup := names[a.Name]; dup {
				add(at+".name", a.Name, fmt.Sprintf("is also the name of apps[%d]", j), "give every app its own name")
			}
			names[a.Name] = i
		}
		if len(a.Domains) == 0 {
			add(at+".domains", "", "is empty", "give the app at least one domain, like --domain app.example.com")
		}
		for j, d := range a.Domains {
			field := fmt.Sprintf("%s.domains[%d]", at, j)
			if p, fix := CheckHostname(d); p != "" {
				add(field, d, p, fix)
				continue
			}
			if o, dup := owner[d]; dup {
				add(field, d, "is already used by "+o, "a domain routes to one app only: remove it from one of them")
				continue
			}
			owner[d] = "app " + a.Name
		}
		checkTLS(at+".tls", a.TLS, add)
		if p := checkURL(a.Upstream, "http", "https"); p != "" {
			fix := "write the app's address with its scheme, like http://127.0.0.1:3000"
			if a.Upstream != "" && !strings.Contains(a.Upstream, "://") {
				fix = "add the scheme: http://" + a.Upstream
			}
			add(at+".upstream", a.Upstream, p, fix)
		}
		switch a.Access {
		case "", AccessPublic:
			if len(a.Allow) > 0 {
				add(at+".allow", strings.Join(a.Allow, ","), "is for private apps", "make the app private (access: private, or moat app set "+a.Name+" --private), or remove allow")
			}
		case AccessPrivate:
			if s.Server.AdminHost() == "" {
				add(at+".access", a.Access, "needs moat's sign-in, which is on the admin host, and the server has none", "set server.admin_domain (or server.domain), or keep the app public")
			}
		default:
			add(at+".access", a.Access, "is not public or private", "write access: private to put the app behind moat's sign-in, or leave it out")
		}
		for j, w := range a.Allow {
			if !strings.Contains(w, "@") && !slices.Contains(Roles, w) {
				add(fmt.Sprintf("%s.allow[%d]", at, j), w, "is not an email or a role", "name an account by its email, or a role: "+strings.Join(Roles, ", "))
			}
		}
		validateRun(at, a, add)
		validateAppBackup(at, a, add)
		spelt := map[string]string{}
		checkRateLimit(at+".rate_limit", a.RateLimit, false, add)
		if t := a.Cache.TTL; t != "" {
			if d, err := time.ParseDuration(t); err != nil || d < 0 || d > time.Hour {
				add(at+".cache.ttl", t, "is not a duration from 0s to 1h", "write how long responses are kept, like 3s, or 0s to turn the cache off")
			}
		}
		for _, k := range sortedKeys(a.Headers) {
			v := a.Headers[k]
			c := canonicalHeader(k)
			first, dup := spelt[c]
			if !dup {
				spelt[c] = k
			}
			switch {
			case !headerName.MatchString(k):
				add(at+".headers", k, "is not a valid header name", "use letters, digits and hyphens, like X-Frame-Options")
			case dup:
				add(at+".headers", k, "is the same header as "+first, "write each header once; header names ignore case")
			case strings.ContainsAny(v, "\r\n\x00"):
				add(at+".headers."+k, v, "contains a line break", "write the header value on one line")
			}
		}
	}
	s.validateFirewall(add)
	s.validateGuard(add)
	s.validateSSH(add)
	s.validateMail(add)
	s.validateAuth(add)
	s.validateBackup(add)
	return errors.Join(errs...)
}

// CheckHostname says what is wrong with a domain for a certificate, and the
// fix; it returns empty strings when the name is good.
func CheckHostname(h string) (problem, fix string) {
	const fix0 = "use a name like app.example.com: letters, digits, hyphens and dots"
	switch {
	case h == "":
		return "is empty", fix0
	case strings.HasPrefix(h, "*."):
		return "is a wildcard", "list each name (wildcards need DNS-01, which moat does not solve)"
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "is an IP address", "use a domain name that resolves to this server; certificates for IP addresses are not supported"
	}
	if strings.Contains(h, "://") || strings.ContainsAny(h, "/:") {
		return "is not a bare host name", "write only the name, like app.example.com, without scheme, port or path"
	}
	if len(h) > 253 {
		return "is longer than 253 characters", fix0
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "is not a fully qualified name", "use the full name, like " + h + ".example.com"
	}
	for _, l := range labels {
		if !hostLabel.MatchString(l) {
			return "is not a valid host name", fix0 + ", no label starting or ending with a hyphen"
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return "has an all-numeric top-level label", fix0
	}
	return "", ""
}

func checkListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port"
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return "has a host that is not an IP address"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "has no valid port"
	}
	return ""
}

// checkHostPort checks an address to dial: a host and a port.
func checkHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil || strings.Contains(addr, "/"): // a URL splits as "https", "//host/path"
		return "is not host:port"
	case host == "":
		return "has no host"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "has no valid port"
	}
	return ""
}

// sameSocket reports whether two listen addresses would bind the same
// port: the same host, or either on every address. Port 0 picks a free
// port each time, so it never collides.
func sameSocket(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return false // reported as not host:port
	}
	an, err1 := strconv.Atoi(ap)
	bn, err2 := strconv.Atoi(bp)
	if err1 != nil || err2 != nil || an != bn || an == 0 {
		return false
	}
	return ah == bh || anyAddr(ah) || anyAddr(bh)
}

func anyAddr(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

func checkURL(raw string, schemes ...string) string {
	if raw == "" {
		return "is empty"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a URL"
	}
	if !slices.Contains(schemes, u.Scheme) {
		return "does not start with " + strings.Join(schemes, ":// or ") + "://"
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return "has no host"
	case u.User != nil:
		return "contains a user name or password"
	case u.Fragment != "":
		return "has a #fragment"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "has no valid port"
		}
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkRateLimit validates a rate limit; server says whether the
// server-only fields are allowed.
func checkRateLimit(at string, r RateLimit, server bool, add func(field, value, problem, fix string)) {
	if r.Requests < 0 || r.Requests > 1_000_000 {
		add(at+".requests", fmt.Sprint(r.Requests), "is not a count from 1 to 1000000", "write how many requests a client may make per period, like 150")
	}
	if r.Requests == 0 && (r.Per != "" || r.Burst != 0) {
		add(at+".requests", "", "is missing", "give requests with per and burst, like requests: 150, per: minute")
	}
	switch r.Per {
	case "", "second", "minute":
	default:
		if d, err := time.ParseDuration(r.Per); err != nil || d < time.Second || d > 24*time.Hour {
			add(at+".per", r.Per, "is not a period", "write second, minute, or a duration from 1s to 24h like 10s")
		}
	}
	if r.Burst < 0 || (r.Requests > 0 && r.Burst > 100*r.Requests) {
		add(at+".burst", fmt.Sprint(r.Burst), "is out of range", "write how many requests may come at once, from 1 to 100 times requests, or leave it out (then it is requests)")
	}
	if !server {
		if r.IPv6Prefix != 0 {
			add(at+".ipv6_prefix", fmt.Sprint(r.IPv6Prefix), "is a server setting", "set server.rate_limit.ipv6_prefix instead")
		}
		if len(r.Allow) > 0 {
			add(at+".allow", strings.Join(r.Allow, ","), "is a server setting", "list never-limited addresses in server.rate_limit.allow")
		}
		return
	}
	if p := r.IPv6Prefix; p != 0 && (p < 32 || p > 128) {
		add(at+".ipv6_prefix", fmt.Sprint(p), "is not a prefix length from 32 to 128", "write how many leading bits make one IPv6 client, like 64 (the default)")
	}
	for i, a := range r.Allow {
		if _, err := ParsePrefix(a); err != nil {
			add(fmt.Sprintf("%s.allow[%d]", at, i), a, "is not an IP address or CIDR", "write an address or network that is never limited, like 203.0.113.7 or 10.0.0.0/8")
		}
	}
}

// ParsePrefix reads an address or a CIDR; an address is its own /32 or
// /128. The prefix is masked, so 10.0.0.7/8 means 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
