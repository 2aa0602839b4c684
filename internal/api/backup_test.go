package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// backupLab is a store in a data dir with the repositories' password,
// and a local repository made with it.
func backupLab(t *testing.T) (st *store.SQLite, dataDir string, repo backup.Repo) {
	t.Helper()
	dataDir = t.TempDir()
	st = openStore(t, dataDir)
	if _, err := backup.NewPassword(PasswordPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	repo = backup.Repo{URL: filepath.Join(t.TempDir(), "restic"), PasswordFile: PasswordPath(dataDir)}
	if err := repo.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st, dataDir, repo
}

// setGitea stores a server with the repository and app gitea with its
// data.
func setGitea(t *testing.T, st store.Store, repo config.Repository, gitea config.App) {
	t.Helper()
	gitea.Name, gitea.Domains, gitea.Upstream = "gitea", []string{"git.example.com"}, "http://127.0.0.1:3000"
	if _, err := st.Update(context.Background(), store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com"}
		s.Backup = config.Backup{Repositories: []config.Repository{repo}}
		s.Apps = []config.App{gitea}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBackupProgressHookForget: a backup streamed as NDJSON tells
// restic's progress (bytes, files, time left) before its outcome; the
// app's pre-backup hook runs first and what it writes is in the
// snapshot; a hook that fails makes no backup and removes nothing, with
// the field and the hook's own words; forget applies the retention
// policy on demand.
func TestBackupProgressHookForget(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	st, dataDir, repo := backupLab(t)
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
		setGitea(t, st, config.Repository{Name: "local", URL: repo.URL}, config.App{Data: []string{data}, Backup: config.AppBackup{Before: hook, Keep: config.Keep{Daily: 1}}})
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
	setGitea(t, st, config.Repository{Name: "usb", URL: repoURL}, config.App{Data: []string{data}})
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

// TestSFTPRepository: an sftp: repository on a real sshd (the test's
// own, on loopback) is reached with moat's own SSH key, which moat
// backup init makes and shows; before the key is let in, init says so
// and still shows the new password; after, backups and restores work,
// and the server's host key is kept and checked.
func TestSFTPRepository(t *testing.T) {
	testenv.NeedRestic(t)
	keysDir := t.TempDir()
	authorized := filepath.Join(keysDir, "authorized_keys")
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Config: []string{
		"AuthorizedKeysFile " + authorized,
		"Subsystem sftp internal-sftp",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		// The keys file is under /tmp, which everyone may write.
		"StrictModes no",
	}})
	ctx := context.Background()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	remote := filepath.Join(t.TempDir(), "restic")
	url := fmt.Sprintf("sftp://root@127.0.0.1:%d/%s", sshd.Port, remote)
	data := filepath.Join(t.TempDir(), "srv", "gitea")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "app.ini"), []byte("[server]\n"), 0o600)
	want := testenv.TreeHash(t, data)
	setGitea(t, st, config.Repository{Name: "offsite", URL: url}, config.App{Data: []string{data}})
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), DataDir: dataDir}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "local"})

	var first BackupInit
	if err := c.Do(ctx, "POST", "/v1/backup/init", struct{}{}, &first); err != nil {
		t.Fatal(err)
	}
	if first.Password == "" || !strings.HasPrefix(first.SSHKey, "ssh-ed25519 ") || !strings.Contains(first.SSHHint, "root@127.0.0.1") {
		t.Errorf("the first init: %+v", first)
	}
	if len(first.Failed) != 1 || !strings.Contains(first.Failed[0].Error, "moat's SSH key") {
		t.Errorf("the first init, before the key is let in: %+v", first.Failed)
	}
	if fi, err := os.Stat(SSHKeyPath(dataDir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("moat's SSH key: %v %v", fi, err)
	}
	if err := os.WriteFile(authorized, []byte(first.SSHKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var again BackupInit
	if err := c.Do(ctx, "POST", "/v1/backup/init", struct{}{}, &again); err != nil {
		t.Fatal(err)
	}
	if again.Password != "" || again.SSHKey != first.SSHKey || len(again.Failed) != 0 || len(again.Repositories) != 1 {
		t.Errorf("init with the key let in: %+v", again)
	}
	if _, err := os.Stat(filepath.Join(remote, "config")); err != nil {
		t.Errorf("no repository on the SFTP server: %v", err)
	}
	runs, err := srv.RunBackup(ctx, "gitea")
	if err != nil || runs[0].Error != "" {
		t.Fatalf("a backup over SFTP: %+v %v", runs, err)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if err := c.Do(ctx, "POST", "/v1/backup/restore", RestoreRequest{App: "gitea", Target: to}, nil); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TreeHash(t, filepath.Join(to, data)); got != want {
		t.Error("the tree restored over SFTP differs")
	}
	known, err := os.ReadFile(filepath.Join(dataDir, "keys", "backup_known_hosts"))
	if err != nil || !strings.Contains(string(known), "ssh-ed25519") {
		t.Errorf("the server's host key is not kept: %q %v", known, err)
	}
	// Another server at the same address: its host key is refused.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ssh.NewPublicKey(other)
	host, _, _ := strings.Cut(string(known), " ")
	os.WriteFile(filepath.Join(dataDir, "keys", "backup_known_hosts"), append([]byte(host+" "), ssh.MarshalAuthorizedKey(otherKey)...), 0o600)
	if _, err := srv.RunBackup(ctx, "gitea"); err == nil || !strings.Contains(err.Error(), "the one moat saw there first") {
		t.Errorf("a changed host key: %v", err)
	}
}

// TestS3Repository: an s3: repository on an S3-compatible server (run by
// the test on loopback) takes its keys from a credentials file, backs up
// and restores; a credentials file others may read is refused by field.
func TestS3Repository(t *testing.T) {
	testenv.NeedRestic(t)
	s3 := testenv.StartS3(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	st := openStore(t, dataDir)
	creds := filepath.Join(t.TempDir(), "s3.env")
	os.WriteFile(creds, []byte("# the bucket's keys\nAWS_ACCESS_KEY_ID="+s3.AccessKey+"\nAWS_SECRET_ACCESS_KEY="+s3.SecretKey+"\n"), 0o600)
	data := filepath.Join(t.TempDir(), "srv", "gitea")
	os.MkdirAll(filepath.Join(data, "repos"), 0o755)
	os.WriteFile(filepath.Join(data, "app.ini"), []byte("[server]\n"), 0o600)
	os.WriteFile(filepath.Join(data, "repos", "HEAD"), []byte(strings.Repeat("ref ", 5000)), 0o644)
	want := testenv.TreeHash(t, data)
	setGitea(t, st, config.Repository{Name: "bucket", URL: s3.URL, Credentials: creds}, config.App{Data: []string{data}})
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), DataDir: dataDir}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "local"})
	var init BackupInit
	if err := c.Do(ctx, "POST", "/v1/backup/init", struct{}{}, &init); err != nil || len(init.Failed) != 0 || init.Password == "" {
		t.Fatalf("init: %+v %v", init, err)
	}
	if runs, err := srv.RunBackup(ctx, "gitea"); err != nil || runs[0].Error != "" {
		t.Fatalf("a backup to S3: %+v %v", runs, err)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if err := c.Do(ctx, "POST", "/v1/backup/restore", RestoreRequest{App: "gitea", Target: to}, nil); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TreeHash(t, filepath.Join(to, data)); got != want {
		t.Error("the tree restored from S3 differs")
	}
	os.Chmod(creds, 0o644)
	_, err := srv.RunBackup(ctx, "gitea")
	if !strings.Contains(err.Error(), "backup.repositories[0].credentials") || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), s3.SecretKey) {
		t.Errorf("a credentials file others may read: %v", err)
	}
}
