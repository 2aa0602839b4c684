package config

import (
	"strings"
	"testing"
)

func TestValidateMail(t *testing.T) {
	base := func() State { return State{Server: Server{Domain: "moat.example.com", Email: "a@example.com"}} }
	for _, tc := range []struct {
		name  string
		mail  Mail
		field string // empty: valid
		value string
	}{
		{"defaults", Mail{}, "", ""},
		{"loopback and private", Mail{Listen: []string{"127.0.0.1:587", "[::1]:587", "172.17.0.1:587", "10.0.0.5:2525", "100.64.1.1:587", "[fd00::1]:587"}}, "", ""},
		{"public address", Mail{Listen: []string{"198.51.100.4:587"}}, "mail.listen[0]", "198.51.100.4:587"},
		{"every address", Mail{Listen: []string{"0.0.0.0:587"}}, "mail.listen[0]", "0.0.0.0:587"},
		{"no port", Mail{Listen: []string{"127.0.0.1"}}, "mail.listen[0]", "127.0.0.1"},
		{"bad domain", Mail{Domain: "no"}, "mail.domain", "no"},
		{"negative quota", Mail{PerAppHourly: -1}, "mail.per_app_hourly", "-1"},
		{"tiny size", Mail{MaxSize: 10}, "mail.max_size", "10"},
		{"huge size", Mail{MaxSize: 1 << 40}, "mail.max_size", "1099511627776"},
		{"recipients", Mail{MaxRecipients: 5000}, "mail.max_recipients", "5000"},
		{"smarthost", Mail{Smarthost: Smarthost{Host: "email-smtp.eu-west-1.amazonaws.com", Username: "AKIA", Password: "s3cret"}}, "", ""},
		{"smarthost without host", Mail{Smarthost: Smarthost{Username: "u", Password: "p"}}, "mail.smarthost.host", ""},
		{"smarthost by IP", Mail{Smarthost: Smarthost{Host: "192.0.2.1"}}, "mail.smarthost.host", "192.0.2.1"},
		{"smarthost port 25", Mail{Smarthost: Smarthost{Host: "smtp.mailgun.org", Port: 25}}, "mail.smarthost.port", "25"},
		{"username without password", Mail{Smarthost: Smarthost{Host: "smtp.mailgun.org", Username: "u"}}, "mail.smarthost.username", "u"},
		{"relative roots", Mail{Smarthost: Smarthost{Host: "smtp.mailgun.org", CARoots: "ca.pem"}}, "mail.smarthost.ca_roots", "ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.Mail = tc.mail
			s.Normalize()
			wantOneFieldError(t, s.Validate(), tc.field, tc.value)
		})
	}
}

// wantOneFieldError checks that err refuses exactly field with value,
// and says how to fix it; with field empty, that err refuses nothing.
func wantOneFieldError(t *testing.T, err error, field, value string) {
	t.Helper()
	errs := fieldErrors(t, err)
	if field == "" {
		if len(errs) > 0 {
			t.Fatalf("refused: %v", errs[0])
		}
		return
	}
	if len(errs) != 1 || errs[0].Field != field || errs[0].Value != value || errs[0].Fix == "" {
		t.Fatalf("got %v, want one error for %s %q with a fix", errs, field, value)
	}
}

func TestNotifyEmail(t *testing.T) {
	s := State{Server: Server{Email: "admin@example.com"}}
	if got := s.NotifyEmail(); len(got) != 1 || got[0] != "admin@example.com" {
		t.Fatalf("default NotifyEmail = %v", got)
	}
	s.Server.Notify.Email = []string{"owner@example.com"}
	if got := s.NotifyEmail(); len(got) != 1 || got[0] != "owner@example.com" {
		t.Fatalf("NotifyEmail = %v", got)
	}
	s.Server.Notify.Email = []string{"Owner <o@example.com>"}
	if errs := fieldErrors(t, s.Validate()); len(errs) != 1 || errs[0].Field != "server.notify.email[0]" {
		t.Fatalf("got %v", errs)
	}
}

// The smarthost's password never reaches a plan, so never the activity
// log; that it changed does.
func TestMailPlanHidesPassword(t *testing.T) {
	a := State{Mail: Mail{Smarthost: Smarthost{Host: "smtp.mailgun.org", Username: "u", Password: "first-secret"}}}
	b := a.Clone()
	b.Mail.Smarthost.Password = "second-secret"
	for _, p := range []Plan{Diff(State{}, a), Diff(a, b)} {
		if len(p) != 1 || p[0].Object != "mail" {
			t.Fatalf("plan %v", p)
		}
		all := p.String() + string(p[0].Before) + string(p[0].After)
		if strings.Contains(all, "secret") {
			t.Fatalf("the plan shows the password:\n%s", all)
		}
	}
	if p := Diff(a, b); !strings.Contains(p.String(), "smarthost.password: (changed)") {
		t.Fatalf("the plan does not say the password changed:\n%s", p)
	}
}
