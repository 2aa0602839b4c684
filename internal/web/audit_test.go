package web

import (
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"moat/internal/audit"
	"moat/internal/testenv"
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
}
