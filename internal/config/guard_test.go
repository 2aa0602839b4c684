package config

import (
	"testing"
	"time"

	"moat/internal/guard"
)

func TestGuardValidate(t *testing.T) {
	const fixDur = "write a duration like 10m or 24h"
	tests := []struct {
		name  string
		guard Guard
		want  []wantErr
	}{
		{"defaults", Guard{}, nil},
		{"tuned", Guard{Ignore: []string{"203.0.113.7", "2001:db8::/48"}, Jails: []Jail{
			{Name: "sshd", Log: "/var/log/auth.log", MaxRetry: 3, FindTime: "1h", BanTime: "1h", MaxBanTime: "720h"},
			{Name: "moat", Off: true},
			{Name: "nextcloud", Log: "/var/log/nextcloud.log", Filter: `Login failed: .* \(Remote IP: (?P<addr>[0-9a-f.:]+)\)`, Literal: "Login failed"},
			{Name: "gitea", Log: Journal, Filter: `Failed authentication attempt for .* from (?P<addr>\S+)`},
		}}, nil},
		{"bad ignore", Guard{Ignore: []string{"10.0.0.1/8"}}, []wantErr{{"guard.ignore[0]", "10.0.0.1/8", "not an address or CIDR prefix", "write an address like 203.0.113.7 or a prefix like 203.0.113.0/24"}}},
		{"bad name", Guard{Jails: []Jail{{Name: "Next Cloud", Log: "/x", Filter: "(?P<addr>x)"}}}, []wantErr{{"guard.jails[0].name", "next cloud", "not a jail name", "use sshd, moat, mail, or a short name of lower-case letters, digits and hyphens, like nextcloud"}}},
		{"twice", Guard{Jails: []Jail{{Name: "sshd"}, {Name: "sshd", BanTime: "1h"}}}, []wantErr{{"guard.jails[1].name", "sshd", "guard.jails[0] too", "tune each jail in one entry"}}},
		{"app jail without log and filter", Guard{Jails: []Jail{{Name: "app"}}}, []wantErr{
			{"guard.jails[0].log", "", "is missing", "give the log file to follow, like /var/log/nextcloud.log, or journal"},
			{"guard.jails[0].filter", "", "is missing", `give a regular expression for a failed login with the address as (?P<addr>...), like ^Login failed: .* from (?P<addr>\S+)`},
		}},
		{"filter without addr", Guard{Jails: []Jail{{Name: "app", Log: "/x", Filter: "Login failed from (\\S+)"}}}, []wantErr{{"guard.jails[0].filter", "Login failed from (\\S+)", "has no group named addr", `capture the client's address as (?P<addr>\S+)`}}},
		{"filter matching nothing in particular", Guard{Jails: []Jail{{Name: "app", Log: "/x", Filter: "(?P<addr>.*)"}}}, []wantErr{{"guard.jails[0].filter", "(?P<addr>.*)", "matches an empty line", "anchor it to the words of the failure message, like ^Login failed for .* from (?P<addr>\\S+)"}}},
		{"filter that does not compile", Guard{Jails: []Jail{{Name: "app", Log: "/x", Filter: "(?P<addr>"}}}, []wantErr{{"guard.jails[0].filter", "(?P<addr>", "does not compile", "fix the expression (Go's RE2 syntax: no backreferences or lookarounds)"}}},
		{"relative log", Guard{Jails: []Jail{{Name: "sshd", Log: "auth.log"}}}, []wantErr{{"guard.jails[0].log", "auth.log", "not an absolute path", "write the full path, like /var/log/auth.log, or journal"}}},
		{"moat jail with a log", Guard{Jails: []Jail{{Name: "moat", Log: "/x"}}}, []wantErr{{"guard.jails[0].log", "/x", "reads no log", "remove log, filter and literal from the moat jail"}}},
		{"bad numbers", Guard{Jails: []Jail{{Name: "sshd", MaxRetry: -1, FindTime: "forever", BanTime: "0s", MaxBanTime: "1000000h"}}}, []wantErr{
			{"guard.jails[0].max_retry", "-1", "from 1 to 1000", "write how many failures ban, like 5"},
			{"guard.jails[0].find_time", "forever", "not a duration", fixDur},
			{"guard.jails[0].ban_time", "0s", "not a duration", fixDur},
			{"guard.jails[0].max_ban_time", "1000000h", "not a duration", fixDur},
		}},
		{"max below ban", Guard{Jails: []Jail{{Name: "sshd", BanTime: "2h", MaxBanTime: "1h"}}}, []wantErr{{"guard.jails[0].max_ban_time", "1h", "shorter than ban_time 2h", "make max_ban_time at least ban_time, or leave it out"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkValid(t, State{Guard: tt.guard}, tt.want) })
	}
}

func TestGuardJails(t *testing.T) {
	s := State{Guard: Guard{Ignore: []string{"203.0.113.7"}, Jails: []Jail{
		{Name: "app", Log: "/var/log/app.log", Filter: `fail from (?P<addr>\S+)`},
		{Name: "sshd", BanTime: "1h", MaxRetry: 3},
		{Name: "moat", Off: true},
		{Name: "mail", Off: true},
	}}}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	jails := s.GuardJails()
	if len(jails) != 2 || jails[0].Name != "sshd" || jails[1].Name != "app" {
		t.Fatalf("jails %+v: want sshd (tuned) and app; moat and mail are off", jails)
	}
	p := jails[0].Policy(0)
	want := guard.Policy{MaxRetry: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, MaxBanTime: 7 * 24 * time.Hour, V6Prefix: 64}
	if p != want {
		t.Errorf("policy %+v, want %+v", p, want)
	}
	if _, ok := jails[0].Matcher().(guard.SSHD); !ok {
		t.Errorf("sshd's matcher is %T", jails[0].Matcher())
	}
	if a, ok := jails[1].Matcher().Match("fail from 198.51.100.7"); !ok || a.Addr.String() != "198.51.100.7" {
		t.Errorf("app's matcher: %+v %v", a, ok)
	}
	if ig := s.GuardIgnore(); len(ig) != 1 || ig[0].String() != "203.0.113.7/32" {
		t.Errorf("ignore %v", ig)
	}
	if (State{Guard: Guard{Off: true}}).GuardJails() != nil {
		t.Error("a guard that is off runs jails")
	}
	// Defaults: sshd, moat and mail.
	if j := (State{}).GuardJails(); len(j) != 3 || j[0].Name != "sshd" || j[1].Name != "moat" || j[2].Name != "mail" {
		t.Errorf("default jails %+v", j)
	}
}

// TestAppGuardStatuses: an app's guard statuses make a jail named after
// it, tuned by a guard.jails entry of that name, which reads no log.
func TestAppGuardStatuses(t *testing.T) {
	app := func(name string, statuses ...int) App {
		return App{Name: name, Domains: []string{name + ".example.com"}, Upstream: "http://127.0.0.1:3000", GuardStatuses: statuses}
	}
	s := State{Apps: []App{app("wiki", 401, 403), app("blog")}, Guard: Guard{Jails: []Jail{{Name: "wiki", MaxRetry: 10}}}}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	jails := s.GuardJails()
	if len(jails) != 4 || jails[3].Name != "wiki" || jails[3].MaxRetry != 10 || jails[3].Matcher() != nil {
		t.Errorf("jails %+v: want sshd, moat, mail and wiki (tuned, no filter)", jails)
	}
	bad := []struct {
		name string
		s    State
		want []wantErr
	}{
		{"status", State{Apps: []App{app("wiki", 200, 401, 401, 429, 502)}}, []wantErr{
			{"apps[0].guard_statuses[0]", "200", "not a client error status", "list the statuses of a failed login, like [401, 403]"},
			{"apps[0].guard_statuses[2]", "401", "listed twice", "list each status once"},
			{"apps[0].guard_statuses[3]", "429", "not a client error status", "list the statuses of a failed login, like [401, 403]"},
			{"apps[0].guard_statuses[4]", "502", "not a client error status", "list the statuses of a failed login, like [401, 403]"},
		}},
		{"built-in name", State{Apps: []App{app("sshd", 401)}}, []wantErr{{"apps[0].guard_statuses", "[401]", "name of a built-in jail", "rename the app to count its answers"}}},
		{"edge jail with a log", State{Apps: []App{app("wiki", 401)}, Guard: Guard{Jails: []Jail{{Name: "wiki", Log: "/var/log/wiki.log"}}}}, []wantErr{
			{"guard.jails[0].log", "/var/log/wiki.log", "reads no log", "remove log, filter and literal, or give the jail another name"},
		}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Normalize()
			checkErrors(t, tt.s.Validate(), tt.want)
		})
	}
}
