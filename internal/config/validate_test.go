package config

import (
	"errors"
	"strings"
	"testing"
)

// fieldErrors flattens a joined error into its FieldErrors, in order, and
// fails the test on any error that is not one.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		fe, ok := err.(*FieldError)
		if !ok {
			t.Fatalf("error %q (%T) is not a *FieldError", err, err)
		}
		out = append(out, fe)
	}
	if err != nil {
		walk(err)
	}
	return out
}

// wantErr is an expected FieldError; Problem need only be contained in the
// actual one, so the tests pin what the user acts on (field, value, fix)
// without freezing every word of the explanation.
type wantErr struct {
	Field, Value, Problem, Fix string
}

func checkErrors(t *testing.T, err error, want []wantErr) {
	t.Helper()
	got := fieldErrors(t, err)
	if len(got) != len(want) {
		var lines []string
		for _, g := range got {
			lines = append(lines, g.Error())
		}
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		g := got[i]
		if g.Field != w.Field || g.Value != w.Value || g.Fix != w.Fix || !strings.Contains(g.Problem, w.Problem) || g.Problem == "" {
			t.Errorf("error %d:\n got {Field: %q, Value: %q, Problem: %q, Fix: %q}\nwant {Field: %q, Value: %q, Problem: ~%q, Fix: %q}",
				i, g.Field, g.Value, g.Problem, g.Fix, w.Field, w.Value, w.Problem, w.Fix)
		}
	}
}

// checkValid normalizes and validates s: it must pass when want is nil,
// and fail with exactly want otherwise.
func checkValid(t *testing.T, s State, want []wantErr) {
	t.Helper()
	s.Normalize()
	err := s.Validate()
	if want == nil {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	checkErrors(t, err, want)
}

func TestValidateGood(t *testing.T) {
	tests := []struct {
		name string
		s    State
	}{
		{"zero state", State{}},
		{"full state", fullState()},
		{"minimal app", State{Apps: []App{{Name: "a", Domains: []string{"a.example.com"}, Upstream: "http://localhost"}}}},
		{"listen on localhost and IPv6", State{Server: Server{Listen: Listen{HTTP: "localhost:8080", HTTPS: "[::1]:8443"}}}},
		{"listen on different hosts, same port", State{Server: Server{Listen: Listen{HTTP: "127.0.0.1:8000", HTTPS: "127.0.0.2:8000"}}}},
		{"listen on two random ports", State{Server: Server{Listen: Listen{HTTP: ":0", HTTPS: ":0"}}}},
		{"resolver by name and IPv6", State{Server: Server{Resolver: "[2606:4700:4700::1111]:53"}}},
		{"app name of 32 characters", State{Apps: []App{{Name: "a" + strings.Repeat("b", 31), Domains: []string{"a.example.com"}, Upstream: "http://127.0.0.1:1"}}}},
		{"upstream with path and port 65535", State{Apps: []App{{Name: "a", Domains: []string{"a.example.com"}, Upstream: "https://[::1]:65535/base/"}}}},
		{"header removed with an empty value", State{Apps: []App{{Name: "a", Domains: []string{"a.example.com"}, Upstream: "http://127.0.0.1:1", Headers: map[string]string{"X-Powered-By": ""}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.s.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

// Fixes as the user reads them, shared by several cases.
const (
	fixHost      = "use a name like app.example.com: letters, digits, hyphens and dots"
	fixHostLabel = fixHost + ", no label starting or ending with a hyphen"
	fixIP        = "use a domain name that resolves to this server; certificates for IP addresses are not supported"
	fixBare      = "write only the name, like app.example.com, without scheme, port or path"
	fixWildcard  = "list each name (wildcards need DNS-01, which moat does not solve)"
	fixUpstream  = "write the app's address with its scheme, like http://127.0.0.1:3000"
	fixListen    = "write host:port or :port, like :443 or 127.0.0.1:8443"
	fixSamePort  = "give HTTP and HTTPS different ports"
	fixEmail     = "write a plain address like admin@example.com"
	fixDirectory = "write the CA's ACME directory URL, like " + LetsEncrypt
	fixResolver  = "write a DNS server's address with its port, like 1.1.1.1:53"
	fixWebhook   = "write the URL that receives alerts, like https://hooks.example.com/moat"
	fixPublicIP  = "write an IPv4 or IPv6 address, like 203.0.113.7"
	fixAppName   = "use 1 to 32 lowercase letters, digits and hyphens, starting with a letter, like gitea"
	fixDupDomain = "a domain routes to one app only: remove it from one of them"
	fixHeader    = "use letters, digits and hyphens, like X-Frame-Options"
	fixHeaderDup = "write each header once; header names ignore case"
	fixOneLine   = "write the header value on one line"
)

var badHosts = []struct {
	name, host, problem, fix string
}{
	{"empty", "", "is empty", fixHost},
	{"space", "my app.example.com", "is not a valid host name", fixHostLabel},
	{"underscore", "my_app.example.com", "is not a valid host name", fixHostLabel},
	{"label starts with hyphen", "-app.example.com", "is not a valid host name", fixHostLabel},
	{"label ends with hyphen", "app-.example.com", "is not a valid host name", fixHostLabel},
	{"empty label", "app..example.com", "is not a valid host name", fixHostLabel},
	{"leading dot", ".example.com", "is not a valid host name", fixHostLabel},
	{"label of 64 characters", strings.Repeat("a", 64) + ".example.com", "is not a valid host name", fixHostLabel},
	{"non-ASCII", "bücher.example.com", "is not a valid host name", fixHostLabel},
	{"IPv4 address", "192.0.2.10", "is an IP address", fixIP},
	{"IPv6 address", "2001:db8::1", "is an IP address", fixIP},
	{"wildcard", "*.example.com", "is a wildcard", fixWildcard},
	{"wildcard inside", "app.*.example.com", "is not a valid host name", fixHostLabel},
	{"URL", "https://app.example.com", "is not a bare host name", fixBare},
	{"URL with path", "https://app.example.com/login", "is not a bare host name", fixBare},
	{"host and port", "app.example.com:443", "is not a bare host name", fixBare},
	{"host and path", "app.example.com/admin", "is not a bare host name", fixBare},
	{"single label", "localhost", "is not a fully qualified name", "use the full name, like localhost.example.com"},
	{"too long", strings.Repeat("abcdefghi.", 25) + "example", "is longer than 253 characters", fixHost},
	{"numeric TLD", "app.123", "has an all-numeric top-level label", fixHost},
	{"numeric TLD, not an IP", "10.0.0.256", "has an all-numeric top-level label", fixHost},
}

func TestCheckHostname(t *testing.T) {
	for _, tt := range badHosts {
		t.Run(tt.name, func(t *testing.T) {
			p, fix := CheckHostname(tt.host)
			if p != tt.problem || fix != tt.fix {
				t.Errorf("CheckHostname(%q) = %q, %q\nwant %q, %q", tt.host, p, fix, tt.problem, tt.fix)
			}
		})
	}
	good := []string{
		"app.example.com",
		"a.b",
		"example.com",
		"1.example.com",
		"a-b--c.example.co.uk",
		"xn--bcher-kva.example",
		strings.Repeat("a", 63) + ".example.com",
		strings.Repeat("abcdefghi.", 24) + "example.com", // 251 characters
	}
	for _, h := range good {
		if p, fix := CheckHostname(h); p != "" || fix != "" {
			t.Errorf("CheckHostname(%q) = %q, %q, want it accepted", h, p, fix)
		}
	}
}

// A bad host name is refused the same way wherever a host name goes.
func TestValidateHostnames(t *testing.T) {
	for _, tt := range badHosts {
		t.Run(tt.name, func(t *testing.T) {
			s := fullState()
			s.Apps[1].Domains[0] = tt.host
			checkErrors(t, s.Validate(), []wantErr{{"apps[1].domains[0]", tt.host, tt.problem, tt.fix}})

			if tt.host == "" {
				return // an empty server.domain means unset
			}
			s = fullState()
			s.Server.Domain = tt.host
			checkErrors(t, s.Validate(), []wantErr{{"server.domain", tt.host, tt.problem, tt.fix}})
		})
	}
}

func TestValidateUnnormalizedHostIsRefused(t *testing.T) {
	// Validate checks what it is given; Parse normalizes first.
	s := fullState()
	s.Apps[1].Domains[0] = "Git.Example.com"
	checkErrors(t, s.Validate(), []wantErr{{"apps[1].domains[0]", "Git.Example.com", "is not a valid host name", fixHostLabel}})
}

func TestValidateUpstream(t *testing.T) {
	tests := []struct {
		name, upstream, problem, fix string
	}{
		{"empty", "", "is empty", fixUpstream},
		{"no scheme, IP and port", "127.0.0.1:3000", "is not a URL", "add the scheme: http://127.0.0.1:3000"},
		{"no scheme, name and port", "localhost:3000", "does not start with http:// or https://", "add the scheme: http://localhost:3000"},
		{"no scheme, bare name", "app", "does not start with http:// or https://", "add the scheme: http://app"},
		{"ftp", "ftp://files.example.com", "does not start with http:// or https://", fixUpstream},
		{"unix socket", "unix:///run/app.sock", "does not start with http:// or https://", fixUpstream},
		{"no host", "http://", "has no host", fixUpstream},
		{"port only", "http://:3000", "has no host", fixUpstream},
		{"path only", "http:///app", "has no host", fixUpstream},
		{"user and password", "http://user:secret@127.0.0.1:3000", "contains a user name or password", fixUpstream},
		{"user only", "http://user@127.0.0.1:3000", "contains a user name or password", fixUpstream},
		{"fragment", "http://127.0.0.1:3000/#top", "has a #fragment", fixUpstream},
		{"port too big", "http://127.0.0.1:65536", "has no valid port", fixUpstream},
		{"port zero", "http://127.0.0.1:0", "has no valid port", fixUpstream},
		{"port not a number", "http://127.0.0.1:http", "is not a URL", fixUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fullState()
			s.Apps[1].Upstream = tt.upstream
			checkErrors(t, s.Validate(), []wantErr{{"apps[1].upstream", tt.upstream, tt.problem, tt.fix}})
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*State)
		want   []wantErr
	}{
		// Apps.
		{"app name empty", func(s *State) { s.Apps[0].Name = "" },
			[]wantErr{{"apps[0].name", "", "is not a valid app name", fixAppName}}},
		{"app name uppercase", func(s *State) { s.Apps[0].Name = "Blog" },
			[]wantErr{{"apps[0].name", "Blog", "is not a valid app name", fixAppName}}},
		{"app name starts with digit", func(s *State) { s.Apps[0].Name = "1blog" },
			[]wantErr{{"apps[0].name", "1blog", "is not a valid app name", fixAppName}}},
		{"app name starts with hyphen", func(s *State) { s.Apps[0].Name = "-blog" },
			[]wantErr{{"apps[0].name", "-blog", "is not a valid app name", fixAppName}}},
		{"app name with underscore", func(s *State) { s.Apps[0].Name = "my_blog" },
			[]wantErr{{"apps[0].name", "my_blog", "is not a valid app name", fixAppName}}},
		{"app name with space", func(s *State) { s.Apps[0].Name = "my blog" },
			[]wantErr{{"apps[0].name", "my blog", "is not a valid app name", fixAppName}}},
		{"app name of 33 characters", func(s *State) { s.Apps[0].Name = "a" + strings.Repeat("b", 32) },
			[]wantErr{{"apps[0].name", "a" + strings.Repeat("b", 32), "is not a valid app name", fixAppName}}},
		{"duplicate app name", func(s *State) { s.Apps[1].Name = "blog" },
			[]wantErr{{"apps[1].name", "blog", "is also the name of apps[0]", "give every app its own name"}}},
		{"app name used three times", func(s *State) {
			s.Apps[1].Name = "blog"
			s.Apps = append(s.Apps, App{Name: "blog", Domains: []string{"third.example.com"}, Upstream: "http://127.0.0.1:1"})
		}, []wantErr{
			{"apps[1].name", "blog", "is also the name of apps", "give every app its own name"},
			{"apps[2].name", "blog", "is also the name of apps", "give every app its own name"},
		}},
		{"no domains", func(s *State) { s.Apps[1].Domains = nil },
			[]wantErr{{"apps[1].domains", "", "is empty", "give the app at least one domain, like --domain app.example.com"}}},
		{"empty domains list", func(s *State) { s.Apps[1].Domains = []string{} },
			[]wantErr{{"apps[1].domains", "", "is empty", "give the app at least one domain, like --domain app.example.com"}}},
		{"domain in two apps", func(s *State) { s.Apps[1].Domains = []string{"git.example.com", "www.blog.example.com"} },
			[]wantErr{{"apps[1].domains[1]", "www.blog.example.com", "is already used by app blog", fixDupDomain}}},
		{"domain twice in one app", func(s *State) { s.Apps[0].Domains = append(s.Apps[0].Domains, "blog.example.com") },
			[]wantErr{{"apps[0].domains[2]", "blog.example.com", "is already used by app blog", fixDupDomain}}},
		{"domain is server.domain", func(s *State) { s.Apps[1].Domains[0] = "moat.example.com" },
			[]wantErr{{"apps[1].domains[0]", "moat.example.com", "is already used by server.domain", fixDupDomain}}},
		{"bad header name", func(s *State) { s.Apps[0].Headers["X Frame Options"] = "DENY" },
			[]wantErr{{"apps[0].headers", "X Frame Options", "is not a valid header name", fixHeader}}},
		{"header name with colon", func(s *State) { s.Apps[0].Headers["X-Frame-Options:"] = "DENY" },
			[]wantErr{{"apps[0].headers", "X-Frame-Options:", "is not a valid header name", fixHeader}}},
		{"header name with CR LF", func(s *State) { s.Apps[0].Headers["X-A\r\nX-B"] = "1" },
			[]wantErr{{"apps[0].headers", "X-A\r\nX-B", "is not a valid header name", fixHeader}}},
		{"empty header name", func(s *State) { s.Apps[0].Headers[""] = "1" },
			[]wantErr{{"apps[0].headers", "", "is not a valid header name", fixHeader}}},
		{"header value with CR LF", func(s *State) { s.Apps[0].Headers["X-Frame-Options"] = "DENY\r\nSet-Cookie: a=b" },
			[]wantErr{{"apps[0].headers.X-Frame-Options", "DENY\r\nSet-Cookie: a=b", "line break", fixOneLine}}},
		{"header value with LF", func(s *State) { s.Apps[0].Headers["X-Frame-Options"] = "DENY\n" },
			[]wantErr{{"apps[0].headers.X-Frame-Options", "DENY\n", "line break", fixOneLine}}},
		{"header value with CR", func(s *State) { s.Apps[0].Headers["X-Frame-Options"] = "DENY\r" },
			[]wantErr{{"apps[0].headers.X-Frame-Options", "DENY\r", "line break", fixOneLine}}},
		{"header value with NUL", func(s *State) { s.Apps[0].Headers["X-Frame-Options"] = "DE\x00NY" },
			[]wantErr{{"apps[0].headers.X-Frame-Options", "DE\x00NY", "", fixOneLine}}},
		{"header twice in different case", func(s *State) { s.Apps[0].Headers["x-frame-options"] = "DENY" },
			[]wantErr{{"apps[0].headers", "x-frame-options", "is the same header as X-Frame-Options", fixHeaderDup}}},

		// Server.
		{"email without domain", func(s *State) { s.Server.Email = "admin" },
			[]wantErr{{"server.email", "admin", "is not an email address", fixEmail}}},
		{"email without local part", func(s *State) { s.Server.Email = "@example.com" },
			[]wantErr{{"server.email", "@example.com", "is not an email address", fixEmail}}},
		{"email with display name", func(s *State) { s.Server.Email = "Admin <admin@example.com>" },
			[]wantErr{{"server.email", "Admin <admin@example.com>", "is not an email address", fixEmail}}},
		{"email with mailto", func(s *State) { s.Server.Email = "mailto:admin@example.com" },
			[]wantErr{{"server.email", "mailto:admin@example.com", "is not an email address", fixEmail}}},
		{"email with space", func(s *State) { s.Server.Email = "admin@example.com " },
			[]wantErr{{"server.email", "admin@example.com ", "is not an email address", fixEmail}}},
		{"listen http without port", func(s *State) { s.Server.Listen.HTTP = "80" },
			[]wantErr{{"server.listen.http", "80", "is not host:port", fixListen}}},
		{"listen https with host name", func(s *State) { s.Server.Listen.HTTPS = "example.com:443" },
			[]wantErr{{"server.listen.https", "example.com:443", "has a host that is not an IP address", fixListen}}},
		{"listen https port too big", func(s *State) { s.Server.Listen.HTTPS = ":65536" },
			[]wantErr{{"server.listen.https", ":65536", "has no valid port", fixListen}}},
		{"listen http named port", func(s *State) { s.Server.Listen.HTTP = ":http" },
			[]wantErr{{"server.listen.http", ":http", "has no valid port", fixListen}}},
		{"listen http URL", func(s *State) { s.Server.Listen.HTTP = "http://0.0.0.0:80" },
			[]wantErr{{"server.listen.http", "http://0.0.0.0:80", "is not host:port", fixListen}}},
		{"listen http and https the same", func(s *State) { s.Server.Listen = Listen{HTTP: ":8443", HTTPS: ":8443"} },
			[]wantErr{{"server.listen.https", ":8443", "server.listen.http", fixSamePort}}},
		{"listen https on the default http port", func(s *State) { s.Server.Listen = Listen{HTTPS: ":80"} },
			[]wantErr{{"server.listen.https", ":80", "server.listen.http", fixSamePort}}},
		{"listen http on the default https port", func(s *State) { s.Server.Listen = Listen{HTTP: ":443"} },
			[]wantErr{{"server.listen.http", ":443", "server.listen.https", fixSamePort}}},
		{"listen https on all addresses, http on one", func(s *State) { s.Server.Listen = Listen{HTTP: "127.0.0.1:8000", HTTPS: ":8000"} },
			[]wantErr{{"server.listen.https", ":8000", "server.listen.http", fixSamePort}}},
		{"listen on 0.0.0.0 and one address", func(s *State) { s.Server.Listen = Listen{HTTP: "0.0.0.0:8000", HTTPS: "127.0.0.1:8000"} },
			[]wantErr{{"server.listen.https", "127.0.0.1:8000", "server.listen.http", fixSamePort}}},
		{"acme directory over http", func(s *State) { s.Server.ACME.Directory = "http://acme.example.com/directory" },
			[]wantErr{{"server.acme.directory", "http://acme.example.com/directory", "does not start with https://", fixDirectory}}},
		{"acme directory without scheme", func(s *State) { s.Server.ACME.Directory = "acme-v02.api.letsencrypt.org/directory" },
			[]wantErr{{"server.acme.directory", "acme-v02.api.letsencrypt.org/directory", "does not start with https://", fixDirectory}}},
		{"acme directory without host", func(s *State) { s.Server.ACME.Directory = "https:///directory" },
			[]wantErr{{"server.acme.directory", "https:///directory", "has no host", fixDirectory}}},
		{"ca roots relative", func(s *State) { s.Server.ACME.CARoots = "ca.pem" },
			[]wantErr{{"server.acme.ca_roots", "ca.pem", "is not an absolute path", "write the full path of a PEM file, like /etc/moat/ca.pem"}}},
		{"unknown challenge", func(s *State) { s.Server.ACME.Challenges = []string{ChallengeHTTP01, "dns-01"} },
			[]wantErr{{"server.acme.challenges[1]", "dns-01", "is not a challenge type moat solves", "use http-01 or tls-alpn-01"}}},
		{"challenge in capitals", func(s *State) { s.Server.ACME.Challenges = []string{"HTTP-01"} },
			[]wantErr{{"server.acme.challenges[0]", "HTTP-01", "is not a challenge type moat solves", "use http-01 or tls-alpn-01"}}},
		{"public IP is a prefix", func(s *State) { s.Server.PublicIPs[1] = "203.0.113.0/24" },
			[]wantErr{{"server.public_ips[1]", "203.0.113.0/24", "is not an IP address", fixPublicIP}}},
		{"public IP is a name", func(s *State) { s.Server.PublicIPs[0] = "example.com" },
			[]wantErr{{"server.public_ips[0]", "example.com", "is not an IP address", fixPublicIP}}},
		{"public IP empty", func(s *State) { s.Server.PublicIPs = append(s.Server.PublicIPs, "") },
			[]wantErr{{"server.public_ips[2]", "", "is not an IP address", fixPublicIP}}},
		{"public IP out of range", func(s *State) { s.Server.PublicIPs[0] = "203.0.113.256" },
			[]wantErr{{"server.public_ips[0]", "203.0.113.256", "is not an IP address", fixPublicIP}}},
		{"resolver without port", func(s *State) { s.Server.Resolver = "1.1.1.1" },
			[]wantErr{{"server.resolver", "1.1.1.1", "is not host:port", fixResolver}}},
		{"resolver IPv6 without brackets", func(s *State) { s.Server.Resolver = "2606:4700:4700::1111" },
			[]wantErr{{"server.resolver", "2606:4700:4700::1111", "is not host:port", fixResolver}}},
		{"resolver as URL", func(s *State) { s.Server.Resolver = "https://dns.example.com/dns-query" },
			[]wantErr{{"server.resolver", "https://dns.example.com/dns-query", "is not host:port", fixResolver}}},
		{"resolver port too big", func(s *State) { s.Server.Resolver = "1.1.1.1:65536" },
			[]wantErr{{"server.resolver", "1.1.1.1:65536", "has no valid port", fixResolver}}},
		{"resolver port not a number", func(s *State) { s.Server.Resolver = "1.1.1.1:dns" },
			[]wantErr{{"server.resolver", "1.1.1.1:dns", "has no valid port", fixResolver}}},
		{"resolver without host", func(s *State) { s.Server.Resolver = ":53" },
			[]wantErr{{"server.resolver", ":53", "has no host", fixResolver}}},
		{"webhook without scheme", func(s *State) { s.Server.Notify.Webhook = "hooks.example.com/moat" },
			[]wantErr{{"server.notify.webhook", "hooks.example.com/moat", "does not start with http:// or https://", fixWebhook}}},
		{"webhook ftp", func(s *State) { s.Server.Notify.Webhook = "ftp://hooks.example.com/moat" },
			[]wantErr{{"server.notify.webhook", "ftp://hooks.example.com/moat", "does not start with http:// or https://", fixWebhook}}},
		{"webhook with password", func(s *State) { s.Server.Notify.Webhook = "https://u:p@hooks.example.com/moat" },
			[]wantErr{{"server.notify.webhook", "https://u:p@hooks.example.com/moat", "contains a user name or password", fixWebhook}}},
		{"webhook bad port", func(s *State) { s.Server.Notify.Webhook = "https://hooks.example.com:99999/moat" },
			[]wantErr{{"server.notify.webhook", "https://hooks.example.com:99999/moat", "has no valid port", fixWebhook}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fullState()
			tt.mutate(&s)
			checkErrors(t, s.Validate(), tt.want)
		})
	}
}

// A state with many problems reports all of them, in the order of the file,
// so one run of `moat apply` shows everything to fix.
func TestValidateReportsEveryProblem(t *testing.T) {
	s := fullState()
	s.Server.Domain = "localhost"
	s.Server.Email = "admin"
	s.Server.Listen = Listen{HTTP: ":8000", HTTPS: ":8000"}
	s.Server.ACME.Directory = "http://ca.example.com/dir"
	s.Server.ACME.Challenges = []string{"dns-01"}
	s.Server.PublicIPs = []string{"nope"}
	s.Server.Resolver = "1.1.1.1"
	s.Server.Notify.Webhook = "ftp://x.example.com"
	s.Apps[0].Name = "Blog"
	s.Apps[0].Domains = []string{"*.example.com", "git.example.com"}
	s.Apps[0].Upstream = "127.0.0.1:2368"
	s.Apps[0].Headers = map[string]string{"Bad Name": "1", "X-Ok": "a\nb"}
	s.Apps[1].Domains = []string{"git.example.com"}

	checkErrors(t, s.Validate(), []wantErr{
		{"server.domain", "localhost", "is not a fully qualified name", "use the full name, like localhost.example.com"},
		{"server.email", "admin", "is not an email address", fixEmail},
		{"server.listen.https", ":8000", "server.listen.http", fixSamePort},
		{"server.acme.directory", "http://ca.example.com/dir", "does not start with https://", fixDirectory},
		{"server.acme.challenges[0]", "dns-01", "is not a challenge type", "use http-01 or tls-alpn-01"},
		{"server.public_ips[0]", "nope", "is not an IP address", fixPublicIP},
		{"server.resolver", "1.1.1.1", "is not host:port", fixResolver},
		{"server.notify.webhook", "ftp://x.example.com", "does not start with", fixWebhook},
		{"apps[0].name", "Blog", "is not a valid app name", fixAppName},
		{"apps[0].domains[0]", "*.example.com", "is a wildcard", fixWildcard},
		{"apps[0].upstream", "127.0.0.1:2368", "is not a URL", "add the scheme: http://127.0.0.1:2368"},
		{"apps[0].headers", "Bad Name", "is not a valid header name", fixHeader},
		{"apps[0].headers.X-Ok", "a\nb", "line break", fixOneLine},
		// The invalid app name is not an owner name to report; the
		// domain is still owned by the first app that lists it.
		{"apps[1].domains[0]", "git.example.com", "is already used by app Blog", fixDupDomain},
	})
}

func TestFieldErrorMessage(t *testing.T) {
	s := fullState()
	s.Apps[1].Upstream = "localhost:3000"
	err := s.Validate()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	want := `apps[1].upstream: "localhost:3000" does not start with http:// or https://: add the scheme: http://localhost:3000`
	if got := err.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestValidateTLS(t *testing.T) {
	app := func(tls TLS) State {
		return State{Apps: []App{{Name: "a", Domains: []string{"a.example.com"}, Upstream: "http://127.0.0.1:3000", TLS: tls}}}
	}
	for _, tc := range []struct {
		name string
		s    State
		want []wantErr
	}{
		{"both files", app(TLS{Cert: "/etc/ssl/a.pem", Key: "/etc/ssl/a.key"}), nil},
		{"neither", app(TLS{}), nil},
		{"no key", app(TLS{Cert: "/etc/ssl/a.pem"}), []wantErr{{"apps[0].tls.key", "", "is empty while apps[0].tls.cert is set", "give both the certificate and its key, or neither (moat then orders one)"}}},
		{"a relative path", app(TLS{Cert: "a.pem", Key: "/etc/ssl/a.key"}), []wantErr{{"apps[0].tls.cert", "a.pem", "is not an absolute path", "write the file's full path, like /etc/ssl/moat/cert.pem"}}},
		{"the server's", State{Server: Server{TLS: TLS{Key: "/k"}}}, []wantErr{{"server.tls.cert", "", "is empty while server.tls.key is set", "give both the certificate and its key, or neither (moat then orders one)"}}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkErrors(t, tc.s.Validate(), tc.want) })
	}
	s := app(TLS{Cert: "/c", Key: "/k"})
	s.Server.Domain = "example.com"
	s.Server.TLS = TLS{Cert: "/s", Key: "/sk"}
	got := s.CertFiles()
	if len(got) != 2 || got[0] != (CertFile{"apps[0].tls", "a.example.com", TLS{"/c", "/k"}}) || got[1] != (CertFile{"server.tls", "moat.example.com", TLS{"/s", "/sk"}}) {
		t.Errorf("CertFiles: %+v", got)
	}
}
