package config

import (
	"reflect"
	"strings"
	"testing"
)

const (
	knownTop    = "remove it or correct its spelling; known keys here: apps, auth, backup, firewall, guard, mail, server, ssh"
	knownServer = "remove it or correct its spelling; known keys here: access_log, acme, admin_domain, cloudflare, domain, email, listen, notify, protect, public_ips, rate_limit, resolver, tls, trusted_proxies"
	knownACME   = "remove it or correct its spelling; known keys here: ca_roots, challenges, directory"
	knownApp    = "remove it or correct its spelling; known keys here: access, allow, backup, cache, data, domains, guard_statuses, headers, name, ports, protect, rate_limit, run, tls, upstream"
	knownListen = "remove it or correct its spelling; known keys here: admin, http, https"
	knownNotify = "remove it or correct its spelling; known keys here: email, webhook"
	knownRun    = "remove it or correct its spelling; known keys here: remove, restart, start, status, stop, systemd, timeout, upgrade"
	knownBackup = "remove it or correct its spelling; known keys here: before, keep, schedule"
)

func TestParseUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{
		{"top level", "sever:\n  domain: moat.example.com\n",
			[]wantErr{{"sever", "sever", "is not a known key (line 1)", knownTop}}},
		{"server", "server:\n  domain: moat.example.com\n  emial: admin@example.com\n",
			[]wantErr{{"server.emial", "emial", "is not a known key (line 3)", knownServer}}},
		{"server.listen", "server:\n  listen:\n    htps: ':443'\n",
			[]wantErr{{"server.listen.htps", "htps", "is not a known key (line 3)", knownListen}}},
		{"server.acme", "server:\n  acme:\n    directory: " + LetsEncrypt + "\n    challenge: [http-01]\n",
			[]wantErr{{"server.acme.challenge", "challenge", "is not a known key (line 4)", knownACME}}},
		{"server.notify", "server:\n  notify:\n    slack: https://hooks.example.com\n",
			[]wantErr{{"server.notify.slack", "slack", "is not a known key (line 3)", knownNotify}}},
		{"apps[0]", "apps:\n  - name: web\n    domains: [web.example.com]\n    upstrem: http://127.0.0.1:3000\n",
			[]wantErr{{"apps[0].upstrem", "upstrem", "is not a known key (line 4)", knownApp}}},
		{"apps[0].run", "apps:\n  - name: web\n    domains: [web.example.com]\n    upstream: http://127.0.0.1:3000\n    run: {strt: ./start.sh}\n",
			[]wantErr{{"apps[0].run.strt", "strt", "is not a known key (line 5)", knownRun}}},
		{"apps[0].backup", "apps:\n  - name: web\n    domains: [web.example.com]\n    upstream: http://127.0.0.1:3000\n    backup: {befor: pg_dump}\n",
			[]wantErr{{"apps[0].backup.befor", "befor", "is not a known key (line 5)", knownBackup}}},
		{"Go field name instead of key", "server:\n  PublicIPs: [203.0.113.7]\n",
			[]wantErr{{"server.PublicIPs", "PublicIPs", "is not a known key", knownServer}}},
		{"every unknown key at once", `
server:
  domian: moat.example.com
  acme:
    dir: x
apps:
  - name: a
    domain: a.example.com
  - name: b
    upstraem: http://127.0.0.1:1
extra: 1
`, []wantErr{
			{"server.domian", "domian", "line 3", knownServer},
			{"server.acme.dir", "dir", "line 5", knownACME},
			{"apps[0].domain", "domain", "line 8", knownApp},
			{"apps[1].upstraem", "upstraem", "line 10", knownApp},
			{"extra", "extra", "line 11", knownTop},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse([]byte(tt.yaml))
			checkErrors(t, err, tt.want)
			if !reflect.DeepEqual(s, State{}) {
				t.Errorf("Parse returned %+v with its error, want the zero State", s)
			}
		})
	}
}

func TestParseBadYAML(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unclosed flow sequence", "server: [\n", "line 1"},
		{"bad indentation", "server:\n  domain: a.example.com\n email: x\n", "line 2"},
		{"tab indentation", "server:\n\tdomain: a.example.com\n", "line 2"},
		{"duplicate key", "server:\n  domain: a.example.com\n  domain: b.example.com\n", `"domain" already defined`},
		{"wrong type", "apps: web\n", "cannot unmarshal"},
		{"list where a map goes", "server:\n  - a\n", "cannot unmarshal"},
		{"top level is a list", "- a\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "moat.yaml: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("Parse error = %q, want it to start with %q and mention %q", msg, "moat.yaml: ", tt.want)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# nothing yet\n", "---\n", "null\n", "{}\n", "server:\napps:\n"} {
		s, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%q) error: %v", in, err)
		}
		if !reflect.DeepEqual(s, State{}) {
			t.Errorf("Parse(%q) = %+v, want the zero State", in, s)
		}
	}
}

func TestParseNormalizes(t *testing.T) {
	in := `
server:
  domain: Moat.Example.com.
apps:
  - name: web
    domains: [WWW.Example.com., example.com]
    upstream: http://127.0.0.1:3000
    headers:
      x-frame-options: DENY
  - name: api
    domains: [API.example.com]
    upstream: http://127.0.0.1:4000
`
	want := State{
		Server: Server{Domain: "moat.example.com"},
		Apps: []App{
			{Name: "api", Domains: []string{"api.example.com"}, Upstream: "http://127.0.0.1:4000"},
			{Name: "web", Domains: []string{"www.example.com", "example.com"}, Upstream: "http://127.0.0.1:3000", Headers: map[string]string{"X-Frame-Options": "DENY"}},
		},
	}
	s, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", s, want)
	}
}

// Parse validates after normalizing, so a domain that differs only in case
// or a trailing dot is still a duplicate, and header names that differ only
// in case are one header written twice.
func TestParseRefusesDuplicatesAfterNormalizing(t *testing.T) {
	in := `
apps:
  - name: web
    domains: [example.com, Example.COM.]
    upstream: http://127.0.0.1:3000
    headers:
      X-Frame-Options: DENY
      x-frame-options: SAMEORIGIN
`
	_, err := Parse([]byte(in))
	checkErrors(t, err, []wantErr{
		{"apps[0].domains[1]", "example.com", "is already used by app web", fixDupDomain},
		{"apps[0].headers", "x-frame-options", "is the same header as X-Frame-Options", fixHeaderDup},
	})
}

// Errors name the path in the file the user wrote, not in the sorted state.
func TestParseErrorPathsFollowTheFile(t *testing.T) {
	in := `
apps:
  - name: zulu
    domains: [zulu.example.com]
    upstream: 127.0.0.1:3000
  - name: alpha
    domains: [alpha.example.com]
    upstream: http://127.0.0.1:4000
  - name: alpha
    domains: [alpha2.example.com]
    upstream: http://127.0.0.1:5000
`
	_, err := Parse([]byte(in))
	checkErrors(t, err, []wantErr{
		{"apps[0].upstream", "127.0.0.1:3000", "is not a URL", "add the scheme: http://127.0.0.1:3000"},
		{"apps[2].name", "alpha", "is also the name of apps[1]", "give every app its own name"},
	})
}

func TestParseInvalidState(t *testing.T) {
	s, err := Parse([]byte("server:\n  email: admin\napps:\n  - name: web\n    domains: []\n    upstream: http://127.0.0.1:1\n"))
	checkErrors(t, err, []wantErr{
		{"server.email", "admin", "is not an email address", fixEmail},
		{"apps[0].domains", "", "is empty", "give the app at least one domain, like --domain app.example.com"},
	})
	if !reflect.DeepEqual(s, State{}) {
		t.Errorf("Parse returned %+v with its error, want the zero State", s)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		s    State
	}{
		{"zero", State{}},
		{"full", fullState()},
		{"server only", State{Server: Server{Domain: "moat.example.com", Email: "a@example.com"}}},
		{"values YAML would misread", State{Apps: []App{{
			Name:     "yes",
			Domains:  []string{"null.example.com", "true.example.com"},
			Upstream: "http://127.0.0.1:8080/?q=a: b",
			Headers: map[string]string{
				"X-Yes":                   "yes",
				"X-Null":                  "~",
				"X-Number":                "0123",
				"X-Colon":                 "a: b",
				"X-Hash":                  "# not a comment",
				"Content-Security-Policy": "default-src 'self'; script-src \"none\"",
				"X-Empty":                 "",
			},
		}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.s.Validate(); err != nil {
				t.Fatalf("test state is invalid: %v", err)
			}
			data, err := Marshal(tt.s)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(Marshal(s)): %v\n%s", err, data)
			}
			if !reflect.DeepEqual(got, tt.s) {
				t.Errorf("Parse(Marshal(s)) != s\n got %+v\nwant %+v\nyaml:\n%s", got, tt.s, data)
			}
			if p := Diff(tt.s, got); len(p) != 0 {
				t.Errorf("Diff(s, Parse(Marshal(s))) = %v, want no steps", p)
			}
			again, err := Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(data) {
				t.Errorf("Marshal is not stable:\n%s\nthen\n%s", data, again)
			}
		})
	}
}

func TestMarshalLayout(t *testing.T) {
	data, err := Marshal(fullState())
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if !strings.HasPrefix(text, "# moat desired state") {
		t.Errorf("Marshal output does not start with its comment:\n%s", text)
	}
	for _, want := range []string{"\nserver:\n  domain: moat.example.com\n", "\napps:\n  - name: blog\n", "\n  public_ips:\n    - 203.0.113.7\n", "      X-Powered-By: \"\"\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, text)
		}
	}
	for _, unset := range []string{"resolver: \"\"", "headers: {}", "ca_roots: \"\""} {
		data, _ := Marshal(State{Apps: []App{{Name: "a", Domains: []string{"a.example.com"}, Upstream: "http://x"}}})
		if strings.Contains(string(data), unset) {
			t.Errorf("Marshal writes unset field %q:\n%s", unset, data)
		}
	}
}
