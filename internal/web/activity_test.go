package web

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"moat/internal/store"
)

// TestActivityPage: the log is filtered by who, what and when, and paged
// back 50 entries at a time.
func TestActivityPage(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	start := time.Now().UTC().Add(-48 * time.Hour)
	for i := range 70 {
		e := store.Entry{At: start.Add(time.Duration(i) * time.Minute), Who: "deploy-bot", From: "192.0.2.1", Action: "app.change", Target: fmt.Sprintf("app%02d", i)}
		if i%10 == 0 {
			e.Who, e.Action = "guard", "guard.ban"
		}
		if err := s.store.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	tab := s.signedIn(t, browser.Get(t), "owner@example.com")
	rows := func() int {
		t.Helper()
		n, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll("#entries tbody tr:not(:has(#no-entries))").length`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/activity"), chromedp.WaitVisible(chromedp.ID("entries"))); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != activityPage {
		t.Errorf("the first page shows %d entries, want %d", n, activityPage)
	}
	// 70 entries and the sign-in's own: the second page holds the rest.
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("older"))); err != nil {
		t.Fatal(err)
	}
	waitURL(t, tab, "before=")
	if n := rows(); n < 20 || n >= activityPage {
		t.Errorf("the second page shows %d entries", n)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/activity"), chromedp.WaitVisible(chromedp.ID("who")),
		chromedp.SendKeys(chromedp.ID("action"), "guard"), chromedp.Click(chromedp.ID("filter"))); err != nil {
		t.Fatal(err)
	}
	waitURL(t, tab, "action=guard")
	if n := rows(); n != 7 {
		t.Errorf("filtered by action guard: %d entries, want 7", n)
	}
	body, _ := chromedp.Run(tab, chromedp.TextContent(chromedp.ID("entries")))
	if strings.Contains(body, "app.change") {
		t.Error("the guard filter shows app changes")
	}
	// The last hour: only the sign-in's own entries, none of the 48-hour-old ones.
	since := time.Now().UTC().Format(time.DateOnly)
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/activity?who=deploy&since="+since), chromedp.WaitVisible(chromedp.ID("entries"))); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 0 {
		t.Errorf("deploy-bot since today: %d entries, want none", n)
	}
	// A bad date is the API's refusal, on the page.
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/activity?since=yesterday"), chromedp.WaitVisible(chromedp.ID("error"))); err != nil {
		t.Fatal(err)
	}
	if msg := text(t, tab, "error"); !strings.Contains(msg, "since") || !strings.Contains(msg, "2026-12-07") {
		t.Errorf("a bad date says %q", msg)
	}
}

// TestBansPageIgnoreMe: "Ignore my address" puts the visitor's own
// address on the guard's ignore list, with the plan first, and the list
// shows it; taken off, it is gone.
func TestBansPageIgnoreMe(t *testing.T) {
	s := newSite(t)
	tab := s.signedIn(t, browser.Get(t), "owner@example.com")
	if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/bans"), chromedp.WaitVisible(chromedp.ID("ignore-me"))); err != nil {
		t.Fatal(err)
	}
	if you := text(t, tab, "you"); you != "127.0.0.1" {
		t.Errorf("the page says you are at %q", you)
	}
	review(t, tab, "ignore-me", "guard")
	st, _, _ := s.store.State(context.Background())
	if len(st.Guard.Ignore) != 1 || st.Guard.Ignore[0] != "127.0.0.1/32" {
		t.Fatalf("the ignore list: %v", st.Guard.Ignore)
	}
	if list := text(t, tab, "ignore"); !strings.Contains(list, "127.0.0.1/32") {
		t.Errorf("the page's ignore list: %q", list)
	}
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#ignore button")), chromedp.WaitVisible(chromedp.ID("plan")),
		chromedp.Click(chromedp.ID("make-change")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.store.State(context.Background()); len(st.Guard.Ignore) != 0 {
		t.Errorf("after taking it off: %v", st.Guard.Ignore)
	}
}
