package api

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// TestRemoveWithGrace: removing an app backs its data up first, runs its
// remove command (which deletes the data), and keeps the backup for the
// grace period; restoring within it brings the data back byte for byte
// and the app's routes; after the grace the backup is gone from the
// repository. A backup that cannot be made removes nothing.
func TestRemoveWithGrace(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	st, dataDir, repo := backupLab(t)
	repoURL := repo.URL
	data := filepath.Join(t.TempDir(), "srv", "gitea")
	os.MkdirAll(filepath.Join(data, "repos"), 0o755)
	os.WriteFile(filepath.Join(data, "app.ini"), []byte("[server]\n"), 0o600)
	os.WriteFile(filepath.Join(data, "repos", "HEAD"), []byte(strings.Repeat("ref ", 10000)), 0o644)
	want := testenv.TreeHash(t, data)
	gitea := config.App{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Data: []string{data},
		Run: config.Run{Remove: "rm -rf " + data}}
	if _, err := st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com"}
		s.Backup = config.Backup{Repositories: []config.Repository{{Name: "local", URL: repoURL}}, Grace: "7d"}
		s.Apps = []config.App{gitea, {Name: "wiki", Domains: []string{"wiki.example.com"}, Upstream: "http://127.0.0.1:3001", Data: []string{"/nonexistent/wiki"}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), DataDir: dataDir, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "203.0.113.7"})
	apps := func() int {
		s, _, _ := st.State(ctx)
		return len(s.Apps)
	}

	// A backup that cannot be made removes nothing.
	if err := c.Do(ctx, "DELETE", "/v1/apps/wiki?confirm=wiki", nil, nil); err == nil || !strings.Contains(err.Error(), "was not removed") || !strings.Contains(err.Error(), "--no-grace-backup") {
		t.Errorf("removing an app whose data cannot be backed up: %v", err)
	}
	if err := c.Do(ctx, "DELETE", "/v1/apps/wiki?confirm=wiki&no_grace_backup=wik", nil, nil); err == nil || !strings.Contains(err.Error(), "no_grace_backup") {
		t.Errorf("no grace backup, typed wrong: %v", err)
	}
	if apps() != 2 {
		t.Fatal("a refused removal removed an app")
	}

	var res RemoveResponse
	if err := c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gitea", nil, &res); err != nil {
		t.Fatal(err)
	}
	if res.Grace == nil || res.Grace.Snapshot == "" || !res.Grace.Expires.Equal(clock.Add(7*24*time.Hour)) {
		t.Fatalf("the grace: %+v", res.Grace)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the app's remove command did not run: %v", err)
	}
	var removed []store.Removed
	if err := c.Do(ctx, "GET", "/v1/removed-apps", nil, &removed); err != nil || len(removed) != 1 || removed[0].App.Name != "gitea" {
		t.Fatalf("removed apps: %+v %v", removed, err)
	}

	mu.Lock()
	clock = clock.Add(6 * 24 * time.Hour) // within the grace
	mu.Unlock()
	if err := c.Do(ctx, "POST", "/v1/apps/gitea/restore", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TreeHash(t, data); got != want {
		t.Error("the restored data differs from what was removed")
	}
	if s, _, _ := st.State(ctx); len(s.Apps) != 2 {
		t.Errorf("the app's settings did not come back: %+v", s.Apps)
	} else if a, _ := s.App("gitea"); len(a.Domains) != 1 || a.Domains[0] != "git.example.com" {
		t.Errorf("the app's routes: %+v", a)
	}
	if err := c.Do(ctx, "GET", "/v1/removed-apps", nil, &removed); err != nil || len(removed) != 0 {
		t.Errorf("after the restore: %+v %v", removed, err)
	}

	// Removed again, and left past the grace: the backup is purged.
	if err := c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gitea", nil, &res); err != nil {
		t.Fatal(err)
	}
	if snaps, _ := repo.Snapshots(ctx, "app:gitea"); len(snaps) != 1 {
		t.Fatalf("grace snapshots before the end: %+v", snaps)
	}
	mu.Lock()
	clock = clock.Add(7*24*time.Hour + time.Minute)
	mu.Unlock()
	if err := c.Do(ctx, "GET", "/v1/removed-apps", nil, &removed); err != nil || len(removed) != 0 {
		t.Errorf("after the grace: %+v %v", removed, err)
	}
	if snaps, err := repo.Snapshots(ctx, "app:gitea"); err != nil || len(snaps) != 0 {
		t.Errorf("the backup is still in the repository after the grace: %+v %v", snaps, err)
	}
	if err := c.Do(ctx, "POST", "/v1/apps/gitea/restore", nil, nil); statusOf(err) != 404 {
		t.Errorf("restore after the grace: %v", err)
	}
}

// TestBackupFailureAlerts: a backup that fails (here: a repository never
// made) is refused, in the activity log, and alerted.
func TestBackupFailureAlerts(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	backup.NewPassword(PasswordPath(dataDir))
	data := t.TempDir()
	st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com"}
		s.Backup.Repositories = []config.Repository{{Name: "offsite", URL: filepath.Join(t.TempDir(), "never-made")}}
		s.Apps = []config.App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Data: []string{data}}}
		return nil
	})
	rt := &alertRuntime{}
	var heard []BackupRun
	srv := &Server{Store: st, Runtime: rt, Log: slog.New(slog.DiscardHandler), DataDir: dataDir, OnBackup: func(_ string, runs []BackupRun) { heard = runs }}
	if _, err := srv.RunBackup(ctx, "gitea"); err == nil || !strings.Contains(err.Error(), "moat backup init") {
		t.Errorf("a backup to a repository never made: %v", err)
	}
	if len(rt.alerts) != 1 || rt.alerts[0].Kind != "backup.failed" || !strings.Contains(rt.alerts[0].Message, "offsite") {
		t.Errorf("alerts: %+v", rt.alerts)
	}
	if len(heard) != 1 || heard[0].Error == "" {
		t.Errorf("OnBackup heard %+v", heard)
	}
}
