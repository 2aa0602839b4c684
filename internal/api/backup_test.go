package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// TestBackupProgressHookForget: a backup streamed as NDJSON tells
// restic's progress (bytes, files, time left) before its outcome; the
// app's pre-backup hook runs first and what it writes is in the
// snapshot; a hook that fails makes no backup and removes nothing, with
// the field and the hook's own words; forget applies the retention
// policy on demand.
func TestBackupProgressHookForget(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	if _, err := backup.NewPassword(PasswordPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	repoURL := filepath.Join(t.TempDir(), "restic")
	repo := backup.Repo{URL: repoURL, PasswordFile: PasswordPath(dataDir)}
	if err := repo.Init(ctx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "srv", "gitea")
	os.MkdirAll(data, 0o755)
	for i := range 40 {
		b := make([]byte, 1<<20)
		rand.Read(b)
		os.WriteFile(filepath.Join(data, fmt.Sprintf("blob%02d", i)), b, 0o644)
	}
	dump := filepath.Join(data, "dump.sql")
	set := func(hook string) {
		t.Helper()
		if _, err := st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
			s.Server = config.Server{Domain: "example.com"}
			s.Backup = config.Backup{Repositories: []config.Repository{{Name: "local", URL: repoURL}}}
			s.Apps = []config.App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Data: []string{data},
				Backup: config.AppBackup{Before: hook, Keep: config.Keep{Daily: 1}}}}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	set("echo 'CREATE TABLE repo;' > " + dump)
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), DataDir: dataDir}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "local"})

	var events []BackupEvent
	if err := c.Stream(ctx, "POST", "/v1/backup/run", BackupRequest{App: "gitea"}, func(line []byte) error {
		var ev BackupEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return err
		}
		events = append(events, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) < 2 {
		t.Fatalf("the stream: %+v", events)
	}
	for _, ev := range events[:len(events)-1] {
		if ev.Progress == nil || ev.Repository != "local" || ev.Done {
			t.Errorf("a line before the outcome: %+v", ev)
		}
	}
	if p := events[len(events)-2].Progress; p.TotalFiles < 40 || p.TotalBytes < 40<<20 {
		t.Errorf("the last progress tells not every file and byte: %+v", p)
	}
	last := events[len(events)-1]
	if !last.Done || last.Error != nil || len(last.Runs) != 1 || last.Runs[0].Summary.SnapshotID == "" {
		t.Fatalf("the outcome: %+v", last)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if err := repo.Restore(ctx, last.Runs[0].Summary.SnapshotID, to); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(to, dump)); err != nil || string(b) != "CREATE TABLE repo;\n" {
		t.Errorf("the hook's dump in the snapshot: %q %v", b, err)
	}

	// A second snapshot, then the policy (one daily) applied on demand.
	if _, err := srv.RunBackup(ctx, "gitea"); err != nil {
		t.Fatal(err)
	}
	var forgot []ForgetResult
	if err := c.Do(ctx, "POST", "/v1/backup/forget", BackupRequest{App: "gitea"}, &forgot); err != nil {
		t.Fatal(err)
	}
	if len(forgot) != 1 || len(forgot[0].Kept) != 1 || forgot[0].Error != "" {
		t.Errorf("forget: %+v", forgot)
	}
	before, _ := repo.Snapshots(ctx, "app:gitea")
	if len(before) != 1 {
		t.Errorf("snapshots after forget: %d", len(before))
	}

	// A failing hook: no backup, no removal, and its words.
	set("echo 'pg_dump: connection to server failed' >&2; exit 2")
	err := c.Stream(ctx, "POST", "/v1/backup/run", BackupRequest{App: "gitea"}, func([]byte) error { return nil })
	if statusOf(err) != 400 || !strings.Contains(err.Error(), "connection to server failed") || !strings.Contains(err.Error(), "backup.before") {
		t.Errorf("a failing hook: %v", err)
	}
	err = c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gitea", nil, nil)
	if statusOf(err) != 400 || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "backup.before") {
		t.Errorf("removal with a failing hook: %v", err)
	}
	if s, _, _ := st.State(ctx); len(s.Apps) != 1 {
		t.Error("a removal whose hook failed removed the app")
	}
	if after, _ := repo.Snapshots(ctx, "app:gitea"); len(after) != len(before) {
		t.Errorf("a failed hook made a snapshot: %d, was %d", len(after), len(before))
	}
	var acts []store.Entry
	if err := c.Do(ctx, "GET", "/v1/activity?limit=50", nil, &acts); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range acts {
		seen[e.Action] = true
	}
	for _, want := range []string{"app.pre-backup", "backup.run", "backup.forget"} {
		if !seen[want] {
			t.Errorf("no %s in the activity log: %v", want, seen)
		}
	}
}

// TestBackupFullDisk: a repository on a full disk (a 2 MiB tmpfs, mounted
// in a mount namespace of the test's own, so the machine's mounts never
// change) fails the backup with the repository's field, its address and
// the fix, and the app stays.
func TestBackupFullDisk(t *testing.T) {
	testenv.NeedRestic(t)
	dir := os.Getenv("MOAT_TEST_FULL_DISK")
	if dir == "" {
		if os.Getuid() != 0 {
			t.Skipf("a full disk is a tmpfs mounted in a mount namespace, which needs root; running as uid %d", os.Getuid())
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Fatal("unshare is missing (Debian package util-linux)")
		}
		cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestBackupFullDisk$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "MOAT_TEST_FULL_DISK="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestBackupFullDisk") {
			t.Fatalf("in its own mount namespace: %v\n%s", err, out)
		}
		return
	}
	// In the mount namespace.
	ctx := context.Background()
	repoURL := filepath.Join(dir, "restic")
	os.MkdirAll(repoURL, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", repoURL).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v: %s", err, out)
	}
	dataDir := filepath.Join(dir, "moat")
	st := openStore(t, dataDir)
	if _, err := backup.NewPassword(PasswordPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	repo := backup.Repo{URL: repoURL, PasswordFile: PasswordPath(dataDir)}
	if err := repo.Init(ctx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "srv", "gitea")
	os.MkdirAll(data, 0o755)
	b := make([]byte, 8<<20)
	rand.Read(b)
	os.WriteFile(filepath.Join(data, "blob"), b, 0o644)
	if _, err := st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com"}
		s.Backup = config.Backup{Repositories: []config.Repository{{Name: "usb", URL: repoURL}}}
		s.Apps = []config.App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Data: []string{data}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), DataDir: dataDir}
	runs, err := srv.RunBackup(ctx, "gitea")
	if err == nil || len(runs) != 1 {
		t.Fatalf("a backup to a full disk: %+v %v", runs, err)
	}
	for _, want := range []string{"backup.repositories[0]", repoURL, "disk is full", "free space there, or move the repository"} {
		if !strings.Contains(runs[0].Error, want) {
			t.Errorf("the failure %q lacks %q", runs[0].Error, want)
		}
	}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "local"})
	if err := c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gitea", nil, nil); err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Errorf("removing an app whose grace backup does not fit: %v", err)
	}
	if s, _, _ := st.State(ctx); len(s.Apps) != 1 {
		t.Error("a failed backup removed the app")
	}
	if _, err := os.Stat(filepath.Join(data, "blob")); err != nil {
		t.Errorf("the app's data: %v", err)
	}
}
