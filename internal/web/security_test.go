package web

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

const (
	laptopKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me@laptop"
)

// signedIn is a tab signed in as a new admin, with the mailed code.
func (s *site) signedIn(t *testing.T, b *testenv.Browser, email string) context.Context {
	t.Helper()
	if _, err := s.auth.AddAccount(context.Background(), auth.Actor{Who: "root", From: "unix"}, email, "", auth.RoleAdmin, testPassword); err != nil {
		t.Fatal(err)
	}
	tab := b.Tab(t)
	if err := chromedp.Do(tab, signInSteps(s.srv.URL, email)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("code"), s.lastCode(t)), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("layer-firewall"))); err != nil {
		t.Fatal(err)
	}
	return tab
}

// waitURL waits until the tab's page is one whose address contains part
// and has loaded.
func waitURL(t *testing.T, tab context.Context, part string) {
	t.Helper()
	for range 100 {
		ok, err := chromedp.Run(tab, chromedp.Evaluate[bool](`location.href.includes(`+strconv.Quote(part)+`) && document.readyState == "complete"`))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the page never went to an address with %q", part)
}

func (s *site) addApp(t testing.TB, a config.App) {
	t.Helper()
	if _, err := s.store.Update(context.Background(), store.Actor{Who: "test"}, false, func(st *config.State) error {
		st.Apps = append(st.Apps, a)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func text(t *testing.T, tab context.Context, id string) string {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.TextContent(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("#%s: %v", id, err)
	}
	return v
}

// review submits a form's button, checks the plan shown, and makes the
// change.
func review(t *testing.T, tab context.Context, button, planHas string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID(button)), chromedp.WaitVisible(chromedp.ID("plan"))); err != nil {
		t.Fatalf("%s: %v", button, err)
	}
	if p := text(t, tab, "plan"); !strings.Contains(p, planHas) {
		t.Errorf("%s: the plan does not mention %q:\n%s", button, planHas, p)
	}
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("make-change")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
		t.Fatalf("%s: make the change: %v", button, err)
	}
}

// refusedWith submits a form's button and checks the page's error.
func refusedWith(t *testing.T, tab context.Context, button string, want ...string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID(button)), chromedp.WaitVisible(chromedp.ID("error"))); err != nil {
		t.Fatalf("%s: %v", button, err)
	}
	got := text(t, tab, "error")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: the refusal %q lacks %q", button, got, w)
		}
	}
}

// TestSecurityTab: the tab's forms go through the API with a plan first,
// its refusals are the API's words, every field has a label, and the
// whole tab works from the keyboard.
func TestSecurityTab(t *testing.T) {
	s := newSite(t)
	s.addApp(t, config.App{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000"})
	b := browser.Get(t)
	tab := s.signedIn(t, b, "owner@example.com")
	shots := t.TempDir()
	open := func() {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/security?app=gitea"), chromedp.WaitVisible(chromedp.ID("add-rule"))); err != nil {
			t.Fatal(err)
		}
	}
	open()

	t.Run("every field has a label", func(t *testing.T) {
		unlabelled, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input:not([type=hidden]), select, textarea")].filter(e => e.labels.length == 0).map(e => e.id || e.name)`))
		if err != nil {
			t.Fatal(err)
		}
		if len(unlabelled) > 0 {
			t.Errorf("fields without a label: %v", unlabelled)
		}
	})

	t.Run("tab order", func(t *testing.T) {
		var order []string
		for range 60 {
			if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Tab)); err != nil {
				t.Fatal(err)
			}
			id, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName + ":" + document.activeElement.textContent.trim()`))
			if err != nil {
				t.Fatal(err)
			}
			order = append(order, id)
		}
		want := []string{"signout", "A:Security", "pick-gitea", "rate-on", "requests", "per", "save-rate", "cache-on", "seconds", "save-cache",
			"protect-off", "save-protect", "port", "proto", "from", "comment", "add-rule-button", "confirm_within", "apply-rules",
			"host-protect-off", "save-host-protect", "key-title", "key-user", "key-line", "add-key-button",
			"show-edge", "show-firewall", "show-sshd"}
		i := 0
		for _, id := range order {
			if i < len(want) && id == want[i] {
				i++
			}
		}
		if i < len(want) {
			t.Errorf("the keyboard does not reach %q after %v; the tab order was %v", want[i], want[:i], order)
		}
	})

	t.Run("a rule added with the keyboard alone", func(t *testing.T) {
		open()
		focusTo := func(id string) {
			t.Helper()
			for range 40 {
				if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Tab)); err != nil {
					t.Fatal(err)
				}
				got, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.activeElement.id`))
				if err != nil {
					t.Fatal(err)
				}
				if got == id {
					return
				}
			}
			t.Fatalf("Tab never reaches #%s", id)
		}
		focusTo("port")
		if err := chromedp.Do(tab, chromedp.KeyEvent("9000"), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab),
			chromedp.KeyEvent("203.0.113.7"), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent("office"), chromedp.KeyEvent(kb.Enter),
			chromedp.WaitVisible(chromedp.ID("plan"))); err != nil {
			t.Fatal(err)
		}
		if p := text(t, tab, "plan"); !strings.Contains(p, "9000/tcp") {
			t.Errorf("the plan of the new rule:\n%s", p)
		}
		testenv.Screenshot(t, tab, shots, "plan")
		focusTo("make-change")
		if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
			t.Fatal(err)
		}
		st, _, _ := s.store.State(context.Background())
		if len(st.Firewall.Rules) != 1 || st.Firewall.Rules[0].Port != "9000/tcp" || strings.Join(st.Firewall.Rules[0].From, ",") != "203.0.113.7/32" {
			t.Errorf("stored rules: %+v", st.Firewall.Rules)
		}
		if f := text(t, tab, "config-firewall"); !strings.Contains(f, "203.0.113.7") || !strings.Contains(f, "9000") {
			t.Errorf("Show config's firewall lacks the rule:\n%s", f)
		}
	})

	t.Run("refusals in the API's words", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("port"), "99999")); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, tab, "add-rule-button", "99999")
		open()
		// No daemon manages the firewall here: the API says so, and the
		// page says what it said.
		refusedWith(t, tab, "apply-rules", "no running moat daemon manages the firewall here")
	})

	t.Run("rate limit and cache", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.SetValue(chromedp.ID("requests"), "5"), chromedp.SetValue(chromedp.ID("per"), "second")); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "save-rate", "rate_limit")
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("cache-off"))); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "save-cache", "cache")
		open()
		edge := text(t, tab, "config-edge")
		for _, want := range []string{"requests: 5", "per: second", "ttl: 0s"} {
			if !strings.Contains(edge, want) {
				t.Errorf("Show config's edge lacks %q:\n%s", want, edge)
			}
		}
		if v, _ := chromedp.Run(tab, chromedp.Evaluate[bool](`document.getElementById("cache-off").checked`)); !v {
			t.Error("the cache's form does not show it off")
		}
	})

	t.Run("termination protection", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("protect-on"))); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "save-protect", "protect")
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("host-protect-on"))); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "save-host-protect", "protect")
		st, _, _ := s.store.State(context.Background())
		if a, _ := st.App("gitea"); !a.Protect || !st.Server.Protect {
			t.Errorf("protection after the forms: app %v, host %v", a.Protect, st.Server.Protect)
		}
	})

	t.Run("SSH key added, removed only when typed", func(t *testing.T) {
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("key-title"), "laptop"), chromedp.SetValue(chromedp.ID("key-line"), laptopKey)); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "add-key-button", "ssh")
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("typed-0"), "lapto")); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, tab, "remove-key-0", "type its title, laptop")
		open()
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("typed-0"), "laptop")); err != nil {
			t.Fatal(err)
		}
		review(t, tab, "remove-key-0", "ssh")
		st, _, _ := s.store.State(context.Background())
		if len(st.SSH.Keys) != 0 {
			t.Errorf("keys after the removal: %+v", st.SSH.Keys)
		}
		testenv.Screenshot(t, tab, shots, "security")
	})
}
