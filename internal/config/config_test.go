package config

import (
	"reflect"
	"testing"
	"time"
)

// fullState is a valid, normalized state that sets every field, so tests
// that must see every field (round trip, Clone, Diff) do.
func fullState() State {
	return State{
		Server: Server{
			Domain: "moat.example.com",
			Email:  "admin@example.com",
			Listen: Listen{HTTP: ":8080", HTTPS: "127.0.0.1:8443"},
			ACME: ACME{
				Directory:  LetsEncryptStaging,
				CARoots:    "/etc/moat/ca.pem",
				Challenges: []string{ChallengeHTTP01, ChallengeTLSALPN01},
			},
			PublicIPs: []string{"203.0.113.7", "2001:db8::7"},
			Resolver:  "1.1.1.1:53",
			Notify:    Notify{Webhook: "https://hooks.example.com/moat"},
		},
		Apps: []App{
			{
				Name:     "blog",
				Domains:  []string{"blog.example.com", "www.blog.example.com"},
				Upstream: "http://127.0.0.1:2368",
				Headers:  map[string]string{"X-Frame-Options": "SAMEORIGIN", "X-Powered-By": ""},
			},
			{
				Name:     "gitea",
				Domains:  []string{"git.example.com"},
				Upstream: "https://10.0.0.5:3000/",
			},
		},
		Guard: Guard{Ignore: []string{"203.0.113.0/24"}, Jails: []Jail{{Name: JailSSHD, BanTime: "1h"}}},
		SSH: SSH{Keys: []SSHKey{{
			Title: "laptop", User: "root",
			Key:     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me@laptop",
			AddedBy: "root via control socket", AddedAt: time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC),
		}}},
	}
}

func TestCloneIsDeep(t *testing.T) {
	orig := fullState()
	want := fullState()
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone() = %+v, want %+v", c, orig)
	}

	c.Server.PublicIPs[0] = "198.51.100.1"
	c.Server.ACME.Challenges[0] = "dns-01"
	c.Apps[0].Name = "changed"
	c.Apps[0].Domains[0] = "changed.example.com"
	c.Apps[0].Headers["X-Frame-Options"] = "DENY"
	c.Apps[0].Headers["X-New"] = "1"
	c.Apps[1].Domains = append(c.Apps[1].Domains, "more.example.com")
	c.Apps = append(c.Apps, App{Name: "extra"})

	if !reflect.DeepEqual(orig, want) {
		t.Errorf("mutating the clone changed the original:\n got %+v\nwant %+v", orig, want)
	}
}

func TestCloneKeepsNil(t *testing.T) {
	var s State
	c := s.Clone()
	if c.Apps != nil || c.Server.PublicIPs != nil || c.Server.ACME.Challenges != nil {
		t.Errorf("Clone of the zero State = %+v, want nil slices", c)
	}
	a := App{Name: "x"}.Clone()
	if a.Domains != nil || a.Headers != nil {
		t.Errorf("Clone of an App without domains or headers = %+v, want nil", a)
	}
}

func TestAppLookupAndDomains(t *testing.T) {
	s := fullState()
	a, ok := s.App("gitea")
	if !ok || a.Name != "gitea" {
		t.Fatalf(`App("gitea") = %v, %v`, a, ok)
	}
	a.Upstream = "http://127.0.0.1:1"
	if s.Apps[1].Upstream != "http://127.0.0.1:1" {
		t.Error(`App returns a copy; callers expect to edit the app in place`)
	}
	if a, ok := s.App("nope"); ok || a != nil {
		t.Errorf(`App("nope") = %v, %v, want nil, false`, a, ok)
	}
	want := []string{"blog.example.com", "www.blog.example.com", "git.example.com"}
	if got := s.Domains(); !reflect.DeepEqual(got, want) {
		t.Errorf("Domains() = %q, want %q", got, want)
	}
}

func TestDefaults(t *testing.T) {
	var sv Server
	if got := sv.HTTPAddr(); got != ":80" {
		t.Errorf("HTTPAddr() = %q, want :80", got)
	}
	if got := sv.HTTPSAddr(); got != ":443" {
		t.Errorf("HTTPSAddr() = %q, want :443", got)
	}
	if got := sv.ACME.DirectoryURL(); got != LetsEncrypt {
		t.Errorf("DirectoryURL() = %q, want %q", got, LetsEncrypt)
	}
	sv = fullState().Server
	if sv.HTTPAddr() != ":8080" || sv.HTTPSAddr() != "127.0.0.1:8443" || sv.ACME.DirectoryURL() != LetsEncryptStaging {
		t.Errorf("set addresses not used: %q %q %q", sv.HTTPAddr(), sv.HTTPSAddr(), sv.ACME.DirectoryURL())
	}
}

func TestAllows(t *testing.T) {
	tests := []struct {
		challenges []string
		challenge  string
		want       bool
	}{
		{nil, ChallengeHTTP01, true},
		{nil, ChallengeTLSALPN01, true},
		{[]string{ChallengeHTTP01}, ChallengeHTTP01, true},
		{[]string{ChallengeHTTP01}, ChallengeTLSALPN01, false},
		{[]string{ChallengeTLSALPN01}, ChallengeHTTP01, false},
		{[]string{ChallengeHTTP01, ChallengeTLSALPN01}, ChallengeTLSALPN01, true},
	}
	for _, tt := range tests {
		if got := (ACME{Challenges: tt.challenges}).Allows(tt.challenge); got != tt.want {
			t.Errorf("ACME{Challenges: %q}.Allows(%q) = %v, want %v", tt.challenges, tt.challenge, got, tt.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   State
		want State
	}{
		{
			name: "host names lowercased, trimmed, trailing dot dropped",
			in: State{
				Server: Server{Domain: " Moat.Example.COM. "},
				Apps:   []App{{Name: "web", Domains: []string{"WWW.Example.com.", "example.com", " App.example.com"}}},
			},
			want: State{
				Server: Server{Domain: "moat.example.com"},
				Apps:   []App{{Name: "web", Domains: []string{"www.example.com", "example.com", "app.example.com"}}},
			},
		},
		{
			name: "header names canonicalized, values kept",
			in: State{Apps: []App{{Name: "web", Headers: map[string]string{
				"x-frame-options":           "DENY",
				"CONTENT-SECURITY-POLICY":   "default-src 'self'",
				"strict-transport-security": "",
			}}}},
			want: State{Apps: []App{{Name: "web", Headers: map[string]string{
				"X-Frame-Options":           "DENY",
				"Content-Security-Policy":   "default-src 'self'",
				"Strict-Transport-Security": "",
			}}}},
		},
		{
			name: "invalid header names left for Validate",
			in:   State{Apps: []App{{Name: "web", Headers: map[string]string{"x frame": "1"}}}},
			want: State{Apps: []App{{Name: "web", Headers: map[string]string{"x frame": "1"}}}},
		},
		{
			// Canonicalizing both would keep one value at random; leaving
			// them as written lets Validate refuse the duplicate.
			name: "header names that differ only in case left as written",
			in:   State{Apps: []App{{Name: "web", Headers: map[string]string{"x-frame-options": "DENY", "X-Frame-Options": "SAMEORIGIN", "x-xss-protection": "0"}}}},
			want: State{Apps: []App{{Name: "web", Headers: map[string]string{"x-frame-options": "DENY", "X-Frame-Options": "SAMEORIGIN", "X-Xss-Protection": "0"}}}},
		},
		{
			name: "apps sorted by name, stably",
			in: State{Apps: []App{
				{Name: "zulu", Upstream: "1"},
				{Name: "alpha"},
				{Name: "mike"},
				{Name: "zulu", Upstream: "2"},
			}},
			want: State{Apps: []App{
				{Name: "alpha"},
				{Name: "mike"},
				{Name: "zulu", Upstream: "1"},
				{Name: "zulu", Upstream: "2"},
			}},
		},
		{
			name: "zero state stays zero",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.Clone()
			got.Normalize()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize:\n got %+v\nwant %+v", got, tt.want)
			}
			got.Normalize()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize is not idempotent:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNormalizedFullStateIsUnchanged(t *testing.T) {
	s := fullState()
	s.Normalize()
	if want := fullState(); !reflect.DeepEqual(s, want) {
		t.Errorf("fullState is not normalized:\n got %+v\nwant %+v", s, want)
	}
}
