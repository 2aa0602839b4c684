package sshd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// lab is a real sshd reading a drop-in directory, and a manager of it
// whose reloads are counted.
type lab struct {
	sshd    *testenv.SSHD
	m       *Manager
	reloads int
}

func newLab(t *testing.T, config ...string) *lab {
	t.Helper()
	return newLabUsers(t, nil, config...)
}

// newLabUsers is newLab with accounts that only the test's sshd sees.
func newLabUsers(t *testing.T, users []testenv.User, config ...string) *lab {
	t.Helper()
	dir := testenv.PrivateDir(t)
	dropIns := filepath.Join(dir, "sshd_config.d")
	if err := os.Mkdir(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Include: filepath.Join(dropIns, "*.conf"), Users: users, Config: append([]string{"ListenAddress 127.0.0.1"}, config...)})
	l := &lab{sshd: s}
	l.m = &Manager{
		Paths: Paths{SSHD: s.Binary(), Config: s.Config, DropInDir: dropIns, KeysDir: filepath.Join(dir, "keys"), Passwd: s.Passwd, Shadow: s.Shadow, Group: s.Group},
		Reload: func(ctx context.Context) error {
			l.reloads++
			return s.Reload(ctx)
		},
	}
	return l
}

// TestDropInRefusedBySSHDIsNeverLoaded: a drop-in that fails sshd -t is
// taken back before sshd is reloaded, and the one before it stays.
func TestDropInRefusedBySSHDIsNeverLoaded(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := l.m.changeDropIn(ctx, "10-test.conf", []byte("MaxAuthTries 4\n"), nil); err != nil {
		t.Fatal(err)
	}
	if eff, err := l.m.Effective(ctx, "root"); err != nil || eff.Value("maxauthtries") != "4" {
		t.Fatalf("the good drop-in: %v, %v", eff.Value("maxauthtries"), err)
	}
	err := l.m.changeDropIn(ctx, "10-test.conf", []byte("MaxAuthTries lots\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "not loaded") || !strings.Contains(err.Error(), "10-test.conf line 1") {
		t.Fatalf("a bad drop-in: %v, want sshd's refusal", err)
	}
	if b, _ := os.ReadFile(filepath.Join(l.m.Paths.DropInDir, "10-test.conf")); string(b) != "MaxAuthTries 4\n" {
		t.Errorf("after the refusal the drop-in holds %q, want the one before", b)
	}
	if l.reloads != 1 {
		t.Errorf("sshd was reloaded %d times, want once (for the good drop-in only)", l.reloads)
	}
	// A new drop-in that fails is removed.
	if err := l.m.changeDropIn(ctx, "20-new.conf", []byte("NoSuchKeyword yes\n"), nil); err == nil {
		t.Fatal("a drop-in with an unknown keyword was accepted")
	}
	if _, err := os.Stat(filepath.Join(l.m.Paths.DropInDir, "20-new.conf")); !os.IsNotExist(err) {
		t.Errorf("the refused new drop-in is still there: %v", err)
	}
}

// TestKeysDropInThatSSHDIgnores: when the main configuration sets
// AuthorizedKeysFile before it includes the drop-ins, sshd would never
// read moat's keys; that is refused with the fix, and nothing is left.
func TestKeysDropInThatSSHDIgnores(t *testing.T) {
	l := newLab(t)
	conf, _ := os.ReadFile(l.m.Paths.Config)
	// Before the Include: the first value wins.
	if err := os.WriteFile(l.m.Paths.Config, []byte("AuthorizedKeysFile .ssh/authorized_keys\n"+string(conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "root", Keys: []TitledKey{{Title: "t", Line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj t"}}}})
	if err == nil || !strings.Contains(err.Error(), "does not read moat's keys") || !strings.Contains(err.Error(), "remove that AuthorizedKeysFile line") {
		t.Fatalf("%v, want the refusal with the fix", err)
	}
	if _, err := os.Stat(filepath.Join(l.m.Paths.DropInDir, keysDropIn)); !os.IsNotExist(err) {
		t.Errorf("the drop-in sshd ignores is still there: %v", err)
	}
	if l.reloads != 0 {
		t.Errorf("sshd was reloaded %d times", l.reloads)
	}
}

// TestSyncKeys writes one file per user, whole, and removes the files of
// users who have no keys left.
func TestSyncKeys(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj t"
	if err := l.m.SyncKeys(ctx, []UserKeys{{User: "root", Keys: []TitledKey{{Title: "laptop", Line: key}}}, {User: "deploy", Keys: []TitledKey{{Title: "ci", Line: key}}}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(l.m.Paths.KeysDir, "deploy"))
	if err != nil || !strings.Contains(string(b), "# ci\n"+key+"\n") {
		t.Errorf("deploy's file: %q, %v", b, err)
	}
	if err := l.m.SyncKeys(ctx, []UserKeys{{User: "root", Keys: []TitledKey{{Title: "laptop", Line: key}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.m.Paths.KeysDir, "deploy")); !os.IsNotExist(err) {
		t.Errorf("deploy's file after its last key went: %v", err)
	}
	entries, _ := os.ReadDir(l.m.Paths.KeysDir)
	if len(entries) != 1 {
		t.Errorf("keys dir holds %d files, want root's only (no temporary file left)", len(entries))
	}
	if l.reloads != 1 {
		t.Errorf("sshd reloaded %d times, want once, for the drop-in (key files need none)", l.reloads)
	}
	if err := l.m.SyncKeys(ctx, []UserKeys{{User: "../etc", Keys: []TitledKey{{Title: "x", Line: key}}}}); err == nil {
		t.Error("a user name that is a path was accepted")
	}
}
