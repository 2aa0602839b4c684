package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/testenv"
)

var browser testenv.SharedBrowser

func TestMain(m *testing.M) {
	code := m.Run()
	browser.Close()
	os.Exit(code)
}

// dashboard is a browser tab signed in to a daemon's dashboard.
type dashboard struct {
	t    *testing.T
	e    *mailEnv
	tab  context.Context
	base string
}

// signInDashboard signs email in on the admin host, with the code moat
// mails through its queue to the SMTP sink.
func signInDashboard(t *testing.T, e *mailEnv, admin, email, password string) *dashboard {
	t.Helper()
	d := &dashboard{t: t, e: e, tab: browser.Get(t).Tab(t), base: e.url(admin, "")}
	sent := len(e.sink.Messages())
	if err := chromedp.Do(d.tab, chromedp.Navigate(d.base+"/"), chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), email), chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("code"))); err != nil {
		t.Fatal(err)
	}
	code := mailedCodeTo(t, e, email, sent)
	if err := chromedp.Do(d.tab, chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *dashboard) open(path, waitID string) {
	d.t.Helper()
	if err := chromedp.Do(d.tab, chromedp.Navigate(d.base+path), chromedp.WaitVisible(chromedp.ID(waitID))); err != nil {
		d.t.Fatalf("%s: %v", path, err)
	}
}

func (d *dashboard) do(steps ...chromedp.Action[chromedp.Void]) {
	d.t.Helper()
	if err := chromedp.Do(d.tab, steps...); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dashboard) text(id string) string {
	d.t.Helper()
	v, err := chromedp.Run(d.tab, chromedp.TextContent(chromedp.ID(id)))
	if err != nil {
		d.t.Fatalf("#%s: %v", id, err)
	}
	return v
}

// review presses a form's button, and the plan page's button after it.
func (d *dashboard) review(button string) {
	d.t.Helper()
	d.do(chromedp.Click(chromedp.ID(button)), chromedp.WaitVisible(chromedp.ID("plan")),
		chromedp.Click(chromedp.ID("make-change")), chromedp.WaitVisible(chromedp.ID("notice")))
}

// TestDashboardInTheBrowser: the Security tab and the Bans page, in
// headless Chromium, change the real thing: a rule applied and confirmed
// lets one namespace in and not another, one not confirmed rolls back by
// itself; an app's new rate limit answers 429 at the limit and its cache
// turned off drops X-Cache; an SSH key added logs in to a real sshd and
// removed does not; five failed logins there are a ban on the Bans page,
// and unbanning it there lets the address back in.
func TestDashboardInTheBrowser(t *testing.T) {
	l := newGuardLab(t)
	for _, p := range []string{":9000", ":9002"} {
		l.host.Accepting(t, "tcp", p)
	}
	dir := testenv.PrivateDir(t)
	dropIns := filepath.Join(dir, "sshd_config.d")
	if err := os.Mkdir(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Netns: l.host, Include: filepath.Join(dropIns, "*.conf"), Users: []testenv.User{{Name: "root"}},
		Config: []string{"PasswordAuthentication yes", "PermitRootLogin yes", "MaxStartups 100"}})
	m := &sshd.Manager{Paths: sshd.Paths{SSHD: s.Binary(), Config: s.Config, DropInDir: dropIns, KeysDir: filepath.Join(dir, "keys"), Passwd: s.Passwd, Shadow: s.Shadow, Group: s.Group}, Reload: s.Reload}
	e := startMailEnv(t, withFirewall(firewall.NewManager(l.nft)), withSSH(m))
	ctx := context.Background()
	admin, site := e.host("admin"), e.host("web")
	e.dns.Set(admin, loopbackAddr)
	e.dns.Set(site, loopbackAddr)
	sshPort := fmt.Sprintf("%d/tcp", s.Port)
	e.change(func(st *config.State) {
		st.Server.AdminDomain = admin
		st.Firewall.Rules = []config.FirewallRule{{Port: sshPort, Comment: "ssh"},
			{Port: fmt.Sprintf("%d/tcp", e.httpPort), Comment: "http"}, {Port: fmt.Sprintf("%d/tcp", e.httpsPort), Comment: "https"}}
		st.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Log: s.Log, BanTime: "1h"}}
	})
	e.addApp("web", site)
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	const password = "correct horse battery 9"
	if err := e.client.Do(ctx, "POST", "/v1/users", api.UserRequest{Email: "owner@example.com", Role: auth.RoleAdmin, Password: password}, nil); err != nil {
		t.Fatal(err)
	}
	e.waitCert(admin, 60*time.Second, isValid)
	e.waitCert(site, 60*time.Second, isValid)
	d := signInDashboard(t, e, admin, "owner@example.com", password)
	shots := t.TempDir()

	t.Run("firewall rule confirmed", func(t *testing.T) {
		d.t = t
		d.open("/security", "add-rule")
		d.do(chromedp.SendKeys(chromedp.ID("port"), "9000"), chromedp.SendKeys(chromedp.ID("from"), labAttacker))
		d.review("add-rule-button")
		if reaches(l.attacker, labHost, 9000) {
			t.Fatal("the rule is in force before it was applied")
		}
		d.do(chromedp.SetValue(chromedp.ID("confirm_within"), "60"), chromedp.Click(chromedp.ID("apply-rules")), chromedp.WaitVisible(chromedp.ID("confirm-rules")))
		if st := d.text("firewall-state"); !strings.Contains(st, "on trial") || !strings.Contains(st, "rolls back in") {
			t.Errorf("during the trial the firewall says %q", st)
		}
		testenv.Screenshot(t, d.tab, shots, "firewall-trial")
		d.do(chromedp.Click(chromedp.ID("confirm-rules")), chromedp.WaitVisible(chromedp.ID("notice")))
		if !reaches(l.attacker, labHost, 9000) {
			t.Error("the confirmed rule does not let its one address in")
		}
		if reaches(l.other, labHost2, 9000) {
			t.Error("the confirmed rule lets another address in")
		}
	})

	t.Run("firewall rule not confirmed rolls back", func(t *testing.T) {
		d.t = t
		d.open("/security", "add-rule")
		d.do(chromedp.SendKeys(chromedp.ID("port"), "9002"))
		d.review("add-rule-button")
		d.do(chromedp.SetValue(chromedp.ID("confirm_within"), "5"), chromedp.Click(chromedp.ID("apply-rules")), chromedp.WaitVisible(chromedp.ID("confirm-rules")))
		if !reaches(l.other, labHost2, 9002) {
			t.Fatal("the rule on trial is not in force")
		}
		d.open("/", "layer-firewall")
		if st := d.text("layer-firewall"); !strings.Contains(st, "on trial") {
			t.Errorf("the Overview during the trial: %q", st)
		}
		deadline := time.Now().Add(20 * time.Second)
		for reaches(l.other, labHost2, 9002) {
			if time.Now().After(deadline) {
				t.Fatal("the unconfirmed rule is still in force 20s after a 5s countdown")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !reaches(l.attacker, labHost, 9000) {
			t.Error("the rollback dropped the rule confirmed before")
		}
		d.open("/", "layer-firewall")
		if st := d.text("layer-firewall"); !strings.Contains(st, "in force") {
			t.Errorf("the Overview after the rollback: %q", st)
		}
		if app := d.text("app-web"); !strings.Contains(app, "certificate valid until") {
			t.Errorf("the Overview's app: %q", app)
		}
		testenv.Screenshot(t, d.tab, shots, "overview")
	})

	c := e.httpsClient(e.pebble.Roots())
	fetch := func() *http.Response {
		t.Helper()
		resp, _ := get(t, c, e.url(site, "/"))
		return resp
	}

	t.Run("cache off drops X-Cache", func(t *testing.T) {
		d.t = t
		if resp := fetch(); resp.Header.Get("X-Cache") == "" {
			t.Fatalf("before: no X-Cache on the app's page (%d)", resp.StatusCode)
		}
		d.open("/security?app=web", "cache-off")
		d.do(chromedp.Click(chromedp.ID("cache-off")))
		d.review("save-cache")
		if resp := fetch(); resp.Header.Get("X-Cache") != "" {
			t.Errorf("with the cache off, X-Cache: %s", resp.Header.Get("X-Cache"))
		}
	})

	t.Run("rate limit answers 429 at the new limit", func(t *testing.T) {
		d.t = t
		d.open("/security?app=web", "requests")
		d.do(chromedp.SetValue(chromedp.ID("requests"), "3"), chromedp.SetValue(chromedp.ID("per"), "minute"))
		d.review("save-rate")
		var codes []int
		for range 4 {
			codes = append(codes, fetch().StatusCode)
		}
		if fmt.Sprint(codes) != "[200 200 200 429]" {
			t.Errorf("four requests under a limit of 3 a minute: %v", codes)
		}
	})

	t.Run("SSH key added and removed", func(t *testing.T) {
		d.t = t
		priv, pub := keyPair(t, t.TempDir(), "laptop")
		login := func() error { return testenv.SSHKey(l.other, labHost2, s.Port, "root", priv) }
		d.open("/security", "add-key")
		d.do(chromedp.SendKeys(chromedp.ID("key-title"), "laptop"), chromedp.SetValue(chromedp.ID("key-line"), pub))
		d.review("add-key-button")
		if err := login(); err != nil {
			t.Fatalf("the key added on the dashboard does not log in: %v", err)
		}
		d.open("/security", "typed-0")
		d.do(chromedp.SendKeys(chromedp.ID("typed-0"), "laptop"))
		d.review("remove-key-0")
		if err := login(); err == nil {
			t.Error("the key removed on the dashboard still logs in")
		}
	})

	t.Run("ban shown and lifted", func(t *testing.T) {
		d.t = t
		for i := range 5 {
			if err := testenv.SSHPassword(l.attacker, labHost, s.Port, "nosuchuser", "wrong"); err == nil {
				t.Fatalf("attempt %d logged in", i)
			}
		}
		var row string
		for deadline := time.Now().Add(10 * time.Second); ; {
			d.open("/bans", "bans")
			if row = d.text("bans"); strings.Contains(row, labAttacker+"/32") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ban of %s on the Bans page after 5 failed logins:\n%s", labAttacker, row)
			}
			time.Sleep(300 * time.Millisecond)
		}
		for _, want := range []string{"sshd", "failed", "nosuchuser"} {
			if !strings.Contains(row, want) {
				t.Errorf("the ban's row lacks %q:\n%s", want, row)
			}
		}
		if reaches(l.attacker, labHost, s.Port) {
			t.Fatal("the banned address still reaches sshd")
		}
		testenv.Screenshot(t, d.tab, shots, "bans")
		d.do(chromedp.Click(chromedp.ID("unban-0")), chromedp.WaitVisible(chromedp.ID("notice")))
		if !reaches(l.attacker, labHost, s.Port) {
			t.Error("unbanned on the Bans page, the address still cannot reach sshd")
		}
		d.open("/activity?action=guard", "entries")
		if a := d.text("entries"); !strings.Contains(a, "guard.unban") || !strings.Contains(a, "owner@example.com") {
			t.Errorf("the activity log lacks the unban by the owner:\n%s", a)
		}
	})

	t.Run("the firewall guard's refusal in the API's words", func(t *testing.T) {
		d.t = t
		d.open("/security", "remove-rule-2")
		if rule := d.text("remove-rule-2"); !strings.Contains(rule, "Remove") {
			t.Fatalf("rule 2: %q", rule)
		}
		d.review("remove-rule-2") // the edge's HTTPS port
		d.open("/security", "apply-rules")
		d.do(chromedp.Click(chromedp.ID("apply-rules")), chromedp.WaitVisible(chromedp.ID("error")))
		page := d.text("error")
		err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{ConfirmWithin: "60s"}, nil)
		var ae *api.APIError
		if !errors.As(err, &ae) || !strings.Contains(page, ae.Body.Error.Message) || !strings.Contains(page, "the edge serves every app's HTTPS") {
			t.Errorf("the page says %q; the API says %v", page, err)
		}
	})
}
