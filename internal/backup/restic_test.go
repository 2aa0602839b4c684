package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// makeTree writes an app's data: files, a subdirectory, a private file,
// an empty file and a symlink.
func makeTree(t *testing.T, root string) {
	t.Helper()
	for name, body := range map[string]string{"app.ini": "[server]\nDOMAIN = git.example.com\n", "repos/a.git/HEAD": "ref: refs/heads/main\n", "empty": ""} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "secret.key"), []byte("k3y"), 0o600)
	os.WriteFile(filepath.Join(root, "big.bin"), []byte(strings.Repeat("moat", 300_000)), 0o644)
	if err := os.Symlink("app.ini", filepath.Join(root, "current.ini")); err != nil {
		t.Fatal(err)
	}
}

// TestRepositories: to a local directory and to restic's REST server,
// a tree backed up restores byte for byte, and the repository's
// failures say what to do.
func TestRepositories(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	if v, err := CheckRestic(ctx, ""); err != nil || older(v, MinVersion) {
		t.Fatalf("restic: %s %v", v, err)
	}
	if _, err := CheckRestic(ctx, "/nonexistent/restic"); !errors.Is(err, ErrNoRestic) {
		t.Errorf("a missing restic: %v", err)
	}
	rest := testenv.StartRestServer(t)
	for _, tc := range []struct{ name, url string }{
		{"local directory", filepath.Join(t.TempDir(), "repo")},
		{"rest-server", rest.URL + "moat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := Repo{URL: tc.url, PasswordFile: filepath.Join(dir, "keys", "restic.password")}
			pw, err := NewPassword(r.PasswordFile)
			if err != nil || len(pw) < 40 {
				t.Fatalf("password %q: %v", pw, err)
			}
			if info, _ := os.Stat(r.PasswordFile); info.Mode().Perm() != 0o600 {
				t.Errorf("the password file is %v", info.Mode().Perm())
			}
			if _, err := NewPassword(r.PasswordFile); err == nil {
				t.Error("a password was replaced")
			}
			if _, err := r.Snapshots(ctx); !errors.Is(err, ErrNoRepo) {
				t.Errorf("before init: %v", err)
			}
			if err := r.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.Init(ctx); err != nil {
				t.Errorf("init again: %v", err)
			}
			data := filepath.Join(dir, "srv", "gitea")
			makeTree(t, data)
			want := testenv.TreeHash(t, data)
			var seen []Progress
			sum, err := r.Backup(ctx, []string{data}, []string{"app:gitea"}, func(p Progress) { seen = append(seen, p) })
			if err != nil {
				t.Fatal(err)
			}
			if sum.SnapshotID == "" || sum.TotalFilesProcessed < 5 || sum.DataAdded == 0 {
				t.Errorf("summary: %+v", sum)
			}
			os.WriteFile(filepath.Join(data, "app.ini"), []byte("changed\n"), 0o644)
			second, err := r.Backup(ctx, []string{data}, []string{"app:gitea"}, nil)
			if err != nil || second.FilesChanged != 1 || second.FilesUnmodified < 4 {
				t.Errorf("the second backup: %+v %v", second, err)
			}
			snaps, err := r.Snapshots(ctx, "app:gitea")
			if err != nil || len(snaps) != 2 || !strings.HasPrefix(snaps[0].ID, sum.SnapshotID) {
				t.Fatalf("snapshots: %+v %v", snaps, err)
			}
			if none, _ := r.Snapshots(ctx, "app:other"); len(none) != 0 {
				t.Errorf("another app's snapshots: %+v", none)
			}
			target := filepath.Join(dir, "restored")
			if err := r.Restore(ctx, sum.SnapshotID, target); err != nil {
				t.Fatal(err)
			}
			if got := testenv.TreeHash(t, filepath.Join(target, data)); got != want {
				t.Error("the restored tree differs from the one backed up")
			}
			if err := r.Verify(ctx, "5%"); err != nil {
				t.Errorf("verify: %v", err)
			}
			if f, err := r.Forget(ctx, Keep{Daily: 1}, "app:gitea"); err != nil || len(f.Kept) != 1 || len(f.Removed) != 1 {
				t.Fatalf("forget: %+v %v", f, err)
			}
			if left, _ := r.Snapshots(ctx, "app:gitea"); len(left) != 1 || !strings.HasPrefix(left[0].ID, second.SnapshotID) {
				t.Errorf("after keeping one daily: %+v", left)
			}
			if err := r.Drop(ctx, second.SnapshotID); err != nil {
				t.Fatal(err)
			}
			if left, _ := r.Snapshots(ctx, "app:gitea"); len(left) != 0 {
				t.Errorf("after dropping the last: %+v", left)
			}

			wrong := r
			wrong.PasswordFile = filepath.Join(dir, "wrong.password")
			os.WriteFile(wrong.PasswordFile, []byte("not it\n"), 0o600)
			if _, err := wrong.Snapshots(ctx); !errors.Is(err, ErrPassword) {
				t.Errorf("a wrong password: %v", err)
			}
		})
	}
}
