package web

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"moat/internal/audit"
	"moat/internal/testenv"
	"moat/internal/updates"
)

// TestAuditTab: the Audit tab shows the API's report: the score, each
// finding with why and the fix, for sockets a namespace holds and for
// updates not set up.
func TestAuditTab(t *testing.T) {
	s := newSite(t)
	ns := testenv.NewNetns(t)
	ln := ns.Listen(t, "tcp4", "0.0.0.0:6379")
	defer ln.Close()
	s.api.Proc = audit.Proc{NetPID: strconv.Itoa(ns.Process(t))}

	b := browser.Get(t)
	tab := s.signedIn(t, b, "owner@example.com")
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/audit"), chromedp.WaitVisible(chromedp.ID("score"))); err != nil {
		t.Fatal(err)
	}
	testenv.Screenshot(t, tab, t.TempDir(), "audit")
	page, err := chromedp.Run(tab, chromedp.TextContent(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"/100", "0.0.0.0:6379 (tcp) and the internet can reach it", "moat firewall allow 6379/tcp --from",
		"unattended-upgrades is not installed", "moat updates enable --install", "Why it matters:",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	score := strings.Fields(text(t, tab, "score"))[0]
	if n, err := strconv.Atoi(strings.TrimSuffix(score, "/100")); err != nil || n < 0 || n > 80 {
		t.Errorf("the score %q", score)
	}
	if got := text(t, tab, "updates-state"); got != "Off: unattended-upgrades is not installed." {
		t.Errorf("updates: %q", got)
	}

	// Installed, the page turns them on with a reboot window, refuses a
	// time that is not one, and turns them off again.
	root := s.api.Updates.Root
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/unattended-upgrade"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(root, "etc/apt/apt.conf.d", updates.UnattendedFile)
	enable := func(window, then string) {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/audit"), chromedp.SetValue(chromedp.ID("reboot-window"), window),
			chromedp.Click(chromedp.ID("updates-enable")), chromedp.WaitVisible(chromedp.ID(then))); err != nil {
			t.Fatal(err)
		}
	}
	enable("29:00", "error")
	if got := text(t, tab, "error"); !strings.Contains(got, "reboot_window") || !strings.Contains(got, "29:00") || !strings.Contains(got, "HH:MM") {
		t.Errorf("a window that is no time: %q", got)
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("a refused enable wrote %s: %v", dropIn, err)
	}
	enable("03:30", "updates-disable")
	if got := text(t, tab, "updates-state"); got != "On: security updates install daily, and a reboot one needs happens at 03:30." {
		t.Errorf("after turning them on: %q", got)
	}
	if b, err := os.ReadFile(dropIn); err != nil || !strings.Contains(string(b), `Automatic-Reboot-Time "03:30"`) {
		t.Errorf("%s: %s %v", dropIn, b, err)
	}
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("updates-disable")), chromedp.WaitVisible(chromedp.ID("updates-enable"))); err != nil {
		t.Fatal(err)
	}
	if got := text(t, tab, "updates-state"); got != "Off: moat has not set them up." {
		t.Errorf("after turning them off: %q", got)
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("disable left %s: %v", dropIn, err)
	}
}
