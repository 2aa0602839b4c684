package config

import (
	"testing"
	"time"
)

func TestValidateAuth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		auth  Auth
		admin string
		field string // empty: valid
		value string
	}{
		{"defaults", Auth{}, "", "", ""},
		{"composition", Auth{PasswordPolicy: "Composition"}, "", "", ""},
		{"unknown policy", Auth{PasswordPolicy: "strong"}, "", "auth.password_policy", "strong"},
		{"sessions", Auth{SessionIdle: "15m", SessionMax: "8h"}, "", "", ""},
		{"idle not a duration", Auth{SessionIdle: "half an hour"}, "", "auth.session_idle", "half an hour"},
		{"idle too short", Auth{SessionIdle: "10s"}, "", "auth.session_idle", "10s"},
		{"max too long", Auth{SessionMax: "2000h"}, "", "auth.session_max", "2000h"},
		{"idle longer than max", Auth{SessionIdle: "2h", SessionMax: "1h"}, "", "auth.session_idle", "2h"},
		{"admin domain", Auth{}, "admin.example.com", "", ""},
		{"admin off", Auth{}, "off", "", ""},
		{"admin domain not a name", Auth{}, "no", "server.admin_domain", "no"},
		{"admin domain of an app", Auth{}, "git.example.com", "server.admin_domain", "git.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Server: Server{Domain: "example.com", AdminDomain: tc.admin}, Auth: tc.auth,
				Apps: []App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000"}}}
			s.Normalize()
			wantOneFieldError(t, s.Validate(), tc.field, tc.value)
		})
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute: "1m", 30 * time.Minute: "30m", 90 * time.Minute: "1h30m", 12 * time.Hour: "12h", 90 * time.Second: "1m30s", 10 * time.Second: "10s",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestAuthDefaults(t *testing.T) {
	var a Auth
	if a.Policy() != PolicyLength || a.Idle() != 30*time.Minute || a.Max() != 12*time.Hour {
		t.Errorf("defaults: %s %s %s", a.Policy(), a.Idle(), a.Max())
	}
	for _, tc := range []struct {
		server Server
		want   string
	}{
		{Server{Domain: "example.com"}, "moat.example.com"},
		{Server{Domain: "example.com", AdminDomain: "admin.example.org"}, "admin.example.org"},
		{Server{Domain: "example.com", AdminDomain: "off"}, ""},
		{Server{}, ""},
	} {
		if got := tc.server.AdminHost(); got != tc.want {
			t.Errorf("%+v: admin host %q, want %q", tc.server, got, tc.want)
		}
	}
}
