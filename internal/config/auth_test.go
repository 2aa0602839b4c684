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
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", d, got, want)
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

func TestValidatePrivateApps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		access string
		allow  []string
		admin  string
		field  string // empty: valid
		value  string
	}{
		{"public by default", "", nil, "", "", ""},
		{"private", "private", nil, "", "", ""},
		{"private for some", "private", []string{"Owner@Example.com", "operator"}, "", "", ""},
		{"unknown access", "secret", nil, "", "apps[0].access", "secret"},
		{"allow on a public app", "", []string{"admin"}, "", "apps[0].allow", "admin"},
		{"allow names nothing", "private", []string{"owner"}, "", "apps[0].allow[0]", "owner"},
		{"private without an admin host", "private", nil, "off", "apps[0].access", "private"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Server: Server{Domain: "example.com", AdminDomain: tc.admin},
				Apps: []App{{Name: "grafana", Domains: []string{"grafana.example.com"}, Upstream: "http://127.0.0.1:3000", Access: tc.access, Allow: tc.allow}}}
			s.Normalize()
			wantOneFieldError(t, s.Validate(), tc.field, tc.value)
		})
	}
	a := App{Access: AccessPrivate, Allow: []string{"owner@example.com", "operator"}}
	for _, tc := range []struct {
		email, role string
		want        bool
	}{{"OWNER@example.com", "viewer", true}, {"ops@example.com", "operator", true}, {"viewer@example.com", "viewer", false}} {
		if got := a.Allows(tc.email, tc.role); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v", tc.email, tc.role, got)
		}
	}
	if !(App{Access: AccessPrivate}).Allows("anyone@example.com", "viewer") {
		t.Error("a private app with no allow list refuses an account")
	}
}

func TestValidateRun(t *testing.T) {
	for _, tc := range []struct {
		name  string
		run   Run
		data  []string
		field string // empty: valid
		value string
	}{
		{"nothing", Run{}, nil, "", ""},
		{"systemd", Run{Systemd: "gitea.service", Timeout: "2m"}, []string{"/srv/gitea"}, "", ""},
		{"compose", Run{Start: "docker compose -p gitea -f /srv/gitea/compose.yaml up -d", Stop: "docker compose -p gitea down"}, nil, "", ""},
		{"not a unit", Run{Systemd: "gitea"}, nil, "apps[0].run.systemd", "gitea"},
		{"timeout too long", Run{Timeout: "2h"}, nil, "apps[0].run.timeout", "2h"},
		{"NUL in a command", Run{Stop: "kill\x00 1"}, nil, "apps[0].run.stop", "kill\x00 1"},
		{"relative data", Run{}, []string{"srv/gitea"}, "apps[0].data[0]", "srv/gitea"},
		{"unclean data", Run{}, []string{"/srv/gitea/"}, "apps[0].data[0]", "/srv/gitea/"},
		{"the root", Run{}, []string{"/"}, "apps[0].data[0]", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Server: Server{Domain: "example.com"}, Apps: []App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Run: tc.run, Data: tc.data}}}
			s.Normalize()
			wantOneFieldError(t, s.Validate(), tc.field, tc.value)
		})
	}
	r := Run{Systemd: "gitea.service", Stop: "docker stop gitea"}
	for action, want := range map[string]string{"start": "systemctl start gitea.service", "stop": "docker stop gitea", "status": "systemctl --no-pager status gitea.service", "upgrade": ""} {
		if got := r.Command(action); got != want {
			t.Errorf("Command(%s) = %q, want %q", action, got, want)
		}
	}
	if (Run{}).TimeoutDuration() != DefaultRunTimeout || (Run{Timeout: "30s"}).TimeoutDuration() != 30*time.Second {
		t.Error("timeouts")
	}
}

func TestValidateBackup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     Backup
		field string // empty: valid
		value string
	}{
		{"none", Backup{}, "", ""},
		{"every kind", Backup{Repositories: []Repository{{Name: "local", URL: "/var/backups/moat"}, {Name: "rest", URL: "rest:https://backup.example.com:8000/moat"}, {Name: "s3", URL: "s3:https://s3.example.com/bucket/moat"}, {Name: "sftp", URL: "sftp:backup@host.example.com:/srv/restic"}}, Keep: Keep{Daily: 3}}, "", ""},
		{"relative directory", Backup{Repositories: []Repository{{Name: "local", URL: "backups"}}}, "backup.repositories[0].url", "backups"},
		{"unclean directory", Backup{Repositories: []Repository{{Name: "local", URL: "/var/backups/"}}}, "backup.repositories[0].url", "/var/backups/"},
		{"a REST server without a host", Backup{Repositories: []Repository{{Name: "rest", URL: "rest:https:///moat"}}}, "backup.repositories[0].url", "rest:https:///moat"},
		{"an unknown kind", Backup{Repositories: []Repository{{Name: "b2", URL: "b2:bucket:path"}}}, "backup.repositories[0].url", "b2:bucket:path"},
		{"sftp with a port", Backup{Repositories: []Repository{{Name: "sftp", URL: "sftp://backup@host.example.com:2222//srv/restic"}}}, "", ""},
		{"sftp with no path", Backup{Repositories: []Repository{{Name: "sftp", URL: "sftp:host.example.com"}}}, "backup.repositories[0].url", "sftp:host.example.com"},
		{"sftp with a bad port", Backup{Repositories: []Repository{{Name: "sftp", URL: "sftp://host.example.com:99999//srv"}}}, "backup.repositories[0].url", "sftp://host.example.com:99999//srv"},
		{"s3 with credentials", Backup{Repositories: []Repository{{Name: "s3", URL: "s3:https://s3.example.com/bucket/moat", Credentials: "/etc/moat/s3.env"}}}, "", ""},
		{"relative credentials", Backup{Repositories: []Repository{{Name: "s3", URL: "s3:https://s3.example.com/bucket/moat", Credentials: "s3.env"}}}, "backup.repositories[0].credentials", "s3.env"},
		{"a bad name", Backup{Repositories: []Repository{{Name: "Off Site", URL: "/var/backups/moat"}}}, "backup.repositories[0].name", "Off Site"},
		{"a name twice", Backup{Repositories: []Repository{{Name: "local", URL: "/a"}, {Name: "local", URL: "/b"}}}, "backup.repositories[1].name", "local"},
		{"negative keep", Backup{Keep: Keep{Weekly: -1}}, "backup.keep.weekly", "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Server: Server{Domain: "example.com"}, Backup: tc.b}
			s.Normalize()
			wantOneFieldError(t, s.Validate(), tc.field, tc.value)
		})
	}
	for u, want := range map[string]SFTP{
		"sftp:backup@host.example.com:/srv/restic":      {User: "backup", Host: "host.example.com", Path: "/srv/restic"},
		"sftp:host.example.com:restic":                  {Host: "host.example.com", Path: "restic"},
		"sftp://backup@host.example.com:2222//srv/moat": {User: "backup", Host: "host.example.com", Port: 2222, Path: "/srv/moat"},
	} {
		if got, ok := SFTPTarget(u); !ok || got != want {
			t.Errorf("SFTPTarget(%q) = %+v %v, want %+v", u, got, ok, want)
		}
	}
	if (Backup{}).Policy() != DefaultKeep || (Backup{Keep: Keep{Daily: 1}}).Policy() != (Keep{Daily: 1}) {
		t.Error("policy")
	}
}

func TestSchedule(t *testing.T) {
	at := time.Date(2026, 12, 7, 11, 40, 0, 0, time.UTC)
	for _, tc := range []struct {
		spec string
		next time.Time
	}{
		{"hourly", time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)},
		{"daily 03:00", time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)},
		{"daily 23:30", time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC)},
		{"every 15m", time.Date(2026, 12, 7, 11, 45, 0, 0, time.UTC)},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if got := s.Next(at); !got.Equal(tc.next) {
			t.Errorf("%s: next after %s is %s, want %s", tc.spec, at, got, tc.next)
		}
	}
	for _, bad := range []string{"", "daily", "daily 25:00", "weekly", "every 0s", "every soon"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
	for _, tc := range []struct {
		name         string
		b            AppBackup
		data         []string
		field, value string
	}{
		{"a schedule and a hook", AppBackup{Schedule: "daily 03:00", Before: "pg_dump -f /srv/gitea/dump.sql gitea"}, []string{"/srv/gitea"}, "", ""},
		{"an unknown schedule", AppBackup{Schedule: "daily 3am"}, []string{"/srv/gitea"}, "apps[0].backup.schedule", "daily 3am"},
		{"a schedule with no data", AppBackup{Schedule: "hourly"}, nil, "apps[0].backup.schedule", "hourly"},
		{"a hook with no data", AppBackup{Before: "pg_dump"}, nil, "apps[0].backup.before", "pg_dump"},
		{"a hook with a NUL", AppBackup{Before: "pg_dump\x00"}, []string{"/srv/gitea"}, "apps[0].backup.before", "pg_dump\x00"},
	} {
		s := State{Server: Server{Domain: "example.com"}, Apps: []App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Backup: tc.b, Data: tc.data}}}
		s.Normalize()
		t.Run(tc.name, func(t *testing.T) { wantOneFieldError(t, s.Validate(), tc.field, tc.value) })
	}
	a := App{Run: Run{Stop: "kill 1"}, Backup: AppBackup{Before: "pg_dump"}}
	if a.Command(PreBackup) != "pg_dump" || a.Command("stop") != "kill 1" {
		t.Error("App.Command")
	}
}
