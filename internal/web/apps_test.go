package web

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"moat/internal/api"
	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// TestAppsTab: the Apps tab runs an app's lifecycle commands and shows
// their output; a protected app's stop is refused in the API's words; a
// backup is made on demand; a removal needs the name typed back, and a
// removed app comes back from the Removed list with its data.
func TestAppsTab(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	s := newSite(t)
	if _, err := backup.NewPassword(api.PasswordPath(s.dir)); err != nil {
		t.Fatal(err)
	}
	repoURL := filepath.Join(t.TempDir(), "restic")
	if err := (backup.Repo{URL: repoURL, PasswordFile: api.PasswordPath(s.dir)}).Init(ctx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "srv", "notes")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "notes.db"), []byte(strings.Repeat("note\n", 2000)), 0o600)
	want := testenv.TreeHash(t, data)
	if _, err := s.store.Update(ctx, store.Actor{Who: "test"}, false, func(st *config.State) error {
		st.Backup.Repositories = []config.Repository{{Name: "local", URL: repoURL}}
		st.Apps = append(st.Apps,
			config.App{Name: "wiki", Domains: []string{"wiki.example.com"}, Upstream: "http://127.0.0.1:3001", Protect: true,
				Run: config.Run{Stop: "echo stopping", Status: "echo wiki is up"}},
			config.App{Name: "notes", Domains: []string{"notes.example.com"}, Upstream: "http://127.0.0.1:3002", Data: []string{data},
				Run: config.Run{Remove: "rm -rf " + data}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b := browser.Get(t)
	tab := s.signedIn(t, b, "owner@example.com")
	shots := t.TempDir()
	open := func() {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(s.srv.URL+"/apps"), chromedp.WaitVisible(chromedp.ID("app-wiki"))); err != nil {
			t.Fatal(err)
		}
	}
	open()
	testenv.Screenshot(t, tab, shots, "apps")
	unlabelled, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input:not([type=hidden])")].filter(e => e.labels.length == 0).map(e => e.id || e.name)`))
	if err != nil || len(unlabelled) > 0 {
		t.Errorf("fields without a label: %v %v", unlabelled, err)
	}

	// The protected app's stop: refused, in the API's words.
	c := api.Local((&api.Server{Store: s.store}).Handler(), store.Actor{Who: "test"})
	apiErr := c.Do(ctx, "POST", "/v1/apps/wiki/stop", nil, nil)
	if apiErr == nil {
		t.Fatal("the API stopped a protected app")
	}
	refusedWith(t, tab, "stop-wiki", apiErr.Error())
	open()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("status-wiki")), chromedp.WaitVisible(chromedp.ID("output"))); err != nil {
		t.Fatal(err)
	}
	if out := text(t, tab, "output"); !strings.Contains(out, "wiki is up") {
		t.Errorf("the status command's output: %q", out)
	}

	// A backup on demand.
	open()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("backup-notes")), chromedp.WaitVisible(chromedp.ID("runs"))); err != nil {
		t.Fatal(err)
	}
	if runs := text(t, tab, "runs"); !strings.Contains(runs, "local") || strings.Contains(runs, "Failed") {
		t.Errorf("the backup's runs: %q", runs)
	}

	// The name typed wrong removes nothing; typed right, the app goes.
	remove := func(typed string) {
		t.Helper()
		open()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("remove-open-notes")), chromedp.SendKeys(chromedp.ID("typed-notes"), typed)); err != nil {
			t.Fatal(err)
		}
	}
	remove("note")
	refusedWith(t, tab, "remove-notes", "type its name, notes")
	if st, _, _ := s.store.State(ctx); len(st.Apps) != 2 {
		t.Fatal("a mistyped name removed the app")
	}
	remove("notes")
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("remove-notes")), chromedp.WaitVisible(chromedp.ID("restore-notes"))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the remove command did not run: %v", err)
	}
	testenv.Screenshot(t, tab, shots, "apps-removed")
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("restore-notes")), chromedp.WaitVisible(chromedp.ID("notice")), chromedp.WaitVisible(chromedp.ID("app-notes"))); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TreeHash(t, data); got != want {
		t.Error("the restored data differs from what was removed")
	}
	if n := text(t, tab, "notice"); !strings.Contains(n, "The app is back") {
		t.Errorf("the notice after the restore: %q", n)
	}
}
