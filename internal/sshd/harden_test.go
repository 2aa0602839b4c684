package sshd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/internal/testenv"
)

// hardenLab is a real sshd that lets passwords in (as a fresh VPS does,
// root's too), with alice and root having passwords only sshd sees.
func hardenLab(t *testing.T) *lab {
	t.Helper()
	users := []testenv.User{{Name: "alice", Password: "alice-pw"}, {Name: "root", Password: "root-pw"}}
	return newLabUsers(t, users, "PasswordAuthentication yes", "PermitRootLogin yes")
}

func (l *lab) password(user, pw string) error {
	return testenv.SSHPassword(nil, "127.0.0.1", l.sshd.Port, user, pw)
}

// rootKey adds a key for root through moat's key files, and returns its
// private key file.
func (l *lab) rootKey(t *testing.T) string {
	t.Helper()
	priv := filepath.Join(t.TempDir(), "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", priv).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, _ := os.ReadFile(priv + ".pub")
	if err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "root", Keys: []TitledKey{{Title: "laptop", Line: strings.TrimSpace(string(pub))}}}}); err != nil {
		t.Fatal(err)
	}
	return priv
}

// TestHardenWithoutAKeyIsRefused: with no key for anyone who can log in,
// hardening is refused, naming who would be locked out, and nothing
// changes: passwords still log in.
func TestHardenWithoutAKeyIsRefused(t *testing.T) {
	l := hardenLab(t)
	before, _ := os.ReadDir(l.m.Paths.DropInDir)
	_, _, err := l.m.Harden(context.Background(), HardenOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to turn password login off") || !strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "moat ssh keys add") {
		t.Fatalf("%v, want a refusal naming alice, with the fix", err)
	}
	after, _ := os.ReadDir(l.m.Paths.DropInDir)
	if len(before) != len(after) || l.reloads != 0 {
		t.Errorf("a refused hardening changed the drop-ins (%d -> %d) or reloaded sshd (%d)", len(before), len(after), l.reloads)
	}
	if err := l.password("alice", "alice-pw"); err != nil {
		t.Errorf("password login after the refusal: %v", err)
	}
}

// TestHarden: with root's key in place, hardening turns password login
// off (alice's and root's), root gets in by key only, and the audit is
// clean; the settings read back from sshd -T.
func TestHarden(t *testing.T) {
	l := hardenLab(t)
	ctx := context.Background()
	findings, err := l.m.Audit(ctx)
	if err != nil || len(findings) == 0 {
		t.Fatalf("audit before: %v, %v; want findings (passwords are on)", findings, err)
	}
	if f := findings[0]; f.Keyword != "PasswordAuthentication" || f.Have != "yes" || f.Want != "no" || f.Fix == "" || f.Why == "" {
		t.Errorf("first finding %+v", f)
	}
	key := l.rootKey(t)
	a, _, err := l.m.Harden(ctx, HardenOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.WithKeys, ",") != "root" || strings.Join(a.LockedOut, ",") != "alice" {
		t.Errorf("access %+v: want root with a key, alice locked out", a)
	}
	if err := l.password("alice", "alice-pw"); err == nil {
		t.Error("alice's password still logs in")
	}
	if err := l.password("root", "root-pw"); err == nil {
		t.Error("root's password still logs in")
	}
	if err := testenv.SSHKey(nil, "127.0.0.1", l.sshd.Port, "root", key); err != nil {
		t.Errorf("root's key: %v", err)
	}
	if findings, err := l.m.Audit(ctx); err != nil || len(findings) != 0 {
		t.Errorf("audit after: %+v, %v; want none", findings, err)
	}
	eff, _ := l.m.Effective(ctx, "root")
	for keyword, want := range map[string]string{"maxauthtries": "3", "logingracetime": "30", "x11forwarding": "no", "kbdinteractiveauthentication": "no"} {
		if eff.Value(keyword) != want {
			t.Errorf("%s is %q, want %q", keyword, eff.Value(keyword), want)
		}
	}
}

// TestHardenRollsBackUnlessConfirmed: with a confirmation window and no
// confirmation, the previous settings come back by themselves and
// password login works again; a confirmed hardening stays.
func TestHardenRollsBackUnlessConfirmed(t *testing.T) {
	l := hardenLab(t)
	ctx := context.Background()
	l.rootKey(t)
	done := make(chan error, 1)
	if _, _, err := l.m.Harden(ctx, HardenOptions{Window: 2 * time.Second}, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := l.password("alice", "alice-pw"); err == nil {
		t.Fatal("alice's password logs in while hardened")
	}
	if pending, _ := l.m.Pending(); !pending {
		t.Error("no hardening pending")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("rollback: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no rollback 15s after a 2s window")
	}
	if err := l.password("alice", "alice-pw"); err != nil {
		t.Errorf("after the rollback alice's password does not log in: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.m.Paths.DropInDir, hardenDropIn)); !os.IsNotExist(err) {
		t.Errorf("the drop-in is still there after the rollback: %v", err)
	}
	// Confirmed, it stays.
	if _, _, err := l.m.Harden(ctx, HardenOptions{Window: 2 * time.Second}, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := l.m.Confirm(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("a confirmed hardening rolled back")
	case <-time.After(3 * time.Second):
	}
	if err := l.password("alice", "alice-pw"); err == nil {
		t.Error("after the confirmation alice's password logs in")
	}
	if err := l.m.Confirm(ctx); err == nil {
		t.Error("a second confirmation succeeded")
	}
}

// TestHardenThatSSHDIgnores: a setting made before the Include wins in
// sshd; the hardening is refused with the reason, and taken back.
func TestHardenThatSSHDIgnores(t *testing.T) {
	l := hardenLab(t)
	l.rootKey(t)
	conf, _ := os.ReadFile(l.m.Paths.Config)
	if err := os.WriteFile(l.m.Paths.Config, []byte("PasswordAuthentication yes\n"+string(conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloads := l.reloads
	_, _, err := l.m.Harden(context.Background(), HardenOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "PasswordAuthentication is yes") {
		t.Fatalf("%v, want the refusal naming PasswordAuthentication", err)
	}
	if _, err := os.Stat(filepath.Join(l.m.Paths.DropInDir, hardenDropIn)); !os.IsNotExist(err) {
		t.Errorf("the refused drop-in stays: %v", err)
	}
	if l.reloads != reloads {
		t.Error("sshd was reloaded for a refused hardening")
	}
}

// TestHardenMovesThePort: a port change listens on the new port and the
// old one while it waits for the confirmation, and on the new one only
// after it; a rollback puts the old one back alone. It needs sshd on its
// default port, in a network namespace of its own.
func TestHardenMovesThePort(t *testing.T) {
	ns := testenv.NewNetns(t)
	dir := testenv.PrivateDir(t)
	dropIns := filepath.Join(dir, "sshd_config.d")
	if err := os.Mkdir(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Netns: ns, DefaultPort: true, Include: filepath.Join(dropIns, "*.conf"), Users: []testenv.User{{Name: "root"}}})
	m := &Manager{Paths: Paths{SSHD: s.Binary(), Config: s.Config, DropInDir: dropIns, KeysDir: filepath.Join(dir, "keys"), Passwd: s.Passwd, Shadow: s.Shadow, Group: s.Group}, Reload: s.Reload}
	l := &lab{sshd: s, m: m}
	l.rootKey(t)
	ctx := context.Background()
	listens := func(port int) bool {
		c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	// Not confirmed: back to 22 alone.
	done := make(chan error, 1)
	if _, _, err := m.Harden(ctx, HardenOptions{Window: 2 * time.Second, Port: 2222}, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if !listens(2222) {
		t.Fatal("the new port does not listen during the trial")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if listens(2222) || !listens(22) {
		t.Fatalf("after the rollback: 2222 %v, 22 %v; want 22 only", listens(2222), listens(22))
	}
	// sshd -T, run outside the namespace, reads the same files.
	_, old, err := m.Harden(ctx, HardenOptions{Window: time.Minute, Port: 2222}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 1 || old[0] != 22 {
		t.Errorf("old ports %v, want [22]", old)
	}
	if !listens(2222) || !listens(22) {
		t.Fatalf("during the trial: 2222 %v, 22 %v; want both", listens(2222), listens(22))
	}
	if err := m.Confirm(ctx); err != nil {
		t.Fatal(err)
	}
	if !listens(2222) || listens(22) {
		t.Errorf("after the confirmation: 2222 %v, 22 %v; want 2222 only", listens(2222), listens(22))
	}
	// A port set in sshd_config cannot be moved by a drop-in.
	conf, _ := os.ReadFile(s.Config)
	os.WriteFile(s.Config, []byte("Port 2200\n"+string(conf)), 0o600)
	if _, _, err := m.Harden(ctx, HardenOptions{Window: time.Minute, Port: 2300}, nil); err == nil || !strings.Contains(err.Error(), "remove those Port lines") {
		t.Errorf("moving a port sshd_config sets: %v", err)
	}
}

// TestCheckAccess: only a key sshd would take for a plain login counts.
func TestCheckAccess(t *testing.T) {
	ctx := context.Background()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me"
	root := func(line string) []UserKeys {
		return []UserKeys{{User: "root", Keys: []TitledKey{{Title: "t", Line: line}}}}
	}
	cases := []struct {
		name     string
		config   []string
		proposed []UserKeys
		ok       bool
	}{
		{"a plain key", nil, root(key), true},
		{"no key", nil, root("# nothing"), false},
		{"a key with a forced command", nil, root(`command="backup" ` + key), false},
		{"a key from one network only", nil, root(`from="10.0.0.0/8" ` + key), false},
		{"root not in AllowUsers", []string{"AllowUsers alice"}, root(key), false},
		{"root in DenyUsers", []string{"DenyUsers ro*"}, root(key), false},
		{"keys alone not enough", []string{"AuthenticationMethods publickey,password"}, root(key), false},
		{"moat's files not read", []string{"first: AuthorizedKeysFile .ssh/authorized_keys"}, root(key), false},
		{"root may not log in", []string{"PermitRootLogin no"}, root(key), false},
		{"root not in AllowGroups", []string{"AllowGroups sshusers"}, root(key), false},
		{"root in AllowGroups", []string{"AllowGroups root"}, root(key), true},
		{"a forced command", []string{"ForceCommand internal-sftp"}, root(key), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var config, first []string
			for _, line := range c.config {
				if rest, ok := strings.CutPrefix(line, "first: "); ok {
					first = append(first, rest)
				} else {
					config = append(config, line)
				}
			}
			l := newLabUsers(t, []testenv.User{{Name: "alice", Password: "pw"}, {Name: "root", Password: "pw"}}, config...)
			if len(first) > 0 {
				// Before the Include: the first value wins over moat's.
				conf, _ := os.ReadFile(l.m.Paths.Config)
				os.WriteFile(l.m.Paths.Config, []byte(strings.Join(first, "\n")+"\n"+string(conf)), 0o600)
			}
			// moat's keys are read where its drop-in says, unless the
			// configuration set AuthorizedKeysFile first.
			os.WriteFile(filepath.Join(l.m.Paths.DropInDir, keysDropIn), []byte("AuthorizedKeysFile .ssh/authorized_keys "+filepath.Join(l.m.Paths.KeysDir, "%u")+"\n"), 0o644)
			a, err := l.m.CheckAccess(ctx, c.proposed)
			if (err == nil) != c.ok {
				t.Fatalf("access %+v, %v; want ok %v", a, err, c.ok)
			}
			if err != nil && (!errors.Is(err, ErrLockout) || !strings.Contains(err.Error(), "alice")) {
				t.Errorf("%v: want ErrLockout naming alice", err)
			}
		})
	}
	// A key file sshd's StrictModes refuses (a directory others may
	// write) does not count.
	l := newLabUsers(t, []testenv.User{{Name: "root"}})
	l.rootKey(t)
	if _, err := l.m.CheckAccess(ctx, nil); err != nil {
		t.Fatalf("with root's key: %v", err)
	}
	os.Chmod(l.m.Paths.KeysDir, 0o777)
	if _, err := l.m.CheckAccess(ctx, nil); !errors.Is(err, ErrLockout) {
		t.Errorf("with a world-writable key directory: %v, want ErrLockout", err)
	}
}

// TestKeysKeepTheOwnersAuthorizedKeysFile: moat's drop-in adds its files
// to what sshd read before, a custom file included.
func TestKeysKeepTheOwnersAuthorizedKeysFile(t *testing.T) {
	l := newLab(t, "AuthorizedKeysFile .ssh/custom_keys")
	ctx := context.Background()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me"
	if err := l.m.SyncKeys(ctx, []UserKeys{{User: "root", Keys: []TitledKey{{Title: "t", Line: key}}}}); err != nil {
		t.Fatal(err)
	}
	eff, err := l.m.Effective(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	if got := eff.Values("authorizedkeysfile"); !slices.Contains(got, ".ssh/custom_keys") || !slices.Contains(got, filepath.Join(l.m.Paths.KeysDir, "%u")) {
		t.Errorf("AuthorizedKeysFile %v: want the owner's custom file and moat's", got)
	}
}

// TestSecondHardenThatFails: a harden during a trial that fails leaves
// the first trial on trial, and its rollback still comes.
func TestSecondHardenThatFails(t *testing.T) {
	l := hardenLab(t)
	ctx := context.Background()
	l.rootKey(t)
	done := make(chan error, 1)
	if _, _, err := l.m.Harden(ctx, HardenOptions{Window: 3 * time.Second}, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	first, _ := l.m.HardenDropIn()
	// The owner's stricter MaxAuthTries makes the second drop-in differ.
	conf, _ := os.ReadFile(l.m.Paths.Config)
	os.WriteFile(l.m.Paths.Config, append(conf, []byte("MaxAuthTries 2\n")...), 0o600)
	reload := l.m.Reload
	l.m.Reload = func(context.Context) error { return errors.New("systemctl: timed out") }
	if _, _, err := l.m.Harden(ctx, HardenOptions{Window: time.Hour}, nil); err == nil {
		t.Fatal("a harden whose reload failed succeeded")
	}
	l.m.Reload = reload
	if now, _ := l.m.HardenDropIn(); string(now) != string(first) {
		t.Errorf("after the failed second harden the drop-in is\n%s\nwant the first trial's\n%s", now, first)
	}
	if pending, _ := l.m.Pending(); !pending {
		t.Fatal("the first trial is no longer pending")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the first trial did not roll back")
	}
	if err := l.password("alice", "alice-pw"); err != nil {
		t.Errorf("after the rollback: %v", err)
	}
}

// TestHardenSeesMatchBlocks: a Match block that keeps passwords on for
// one user makes hardening refuse (it would not hold for her), and the
// audit names her.
func TestHardenSeesMatchBlocks(t *testing.T) {
	l := hardenLab(t)
	l.rootKey(t)
	conf, _ := os.ReadFile(l.m.Paths.Config)
	os.WriteFile(l.m.Paths.Config, append(conf, []byte("Match User alice\n\tPasswordAuthentication yes\n")...), 0o600)
	ctx := context.Background()
	_, _, err := l.m.Harden(ctx, HardenOptions{}, nil)
	if !errors.Is(err, ErrNotTaken) || !strings.Contains(err.Error(), "PasswordAuthentication is yes for alice") {
		t.Fatalf("%v, want a refusal naming alice's Match block", err)
	}
	// Hardened for everyone else (the drop-in written by hand), the audit
	// names what the Match block keeps for alice.
	os.WriteFile(filepath.Join(l.m.Paths.DropInDir, hardenDropIn), hardenContent(nil, nil), 0o644)
	findings, err := l.m.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	named := false
	for _, f := range findings {
		if f.For == "alice" && f.Keyword == "PasswordAuthentication" && strings.Contains(f.Fix, "Match block for alice") {
			named = true
		}
	}
	if !named {
		t.Errorf("audit %+v: want alice's Match block", findings)
	}
}

// TestKeysDirThatSSHDWouldIgnore: a keys directory below one others may
// write is refused with the fix; its own modes are put right.
func TestKeysDirThatSSHDWouldIgnore(t *testing.T) {
	l := newLab(t)
	parent := filepath.Dir(l.m.Paths.KeysDir)
	os.MkdirAll(l.m.Paths.KeysDir, 0o700)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me"
	if err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "root", Keys: []TitledKey{{Title: "t", Line: key}}}}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(l.m.Paths.KeysDir); fi.Mode().Perm() != 0o755 {
		t.Errorf("keys dir mode %v, want 0755", fi.Mode().Perm())
	}
	os.Chmod(parent, 0o777)
	defer os.Chmod(parent, 0o755)
	err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "root", Keys: []TitledKey{{Title: "t", Line: key}}}})
	if err == nil || !strings.Contains(err.Error(), "chmod go-w "+parent) {
		t.Errorf("%v, want the refusal with the fix for %s", err, parent)
	}
}

// TestUserKeyLogsIn: a key in moat's files logs a user other than root
// in: sshd reads it as that user, so the files must be readable to him.
func TestUserKeyLogsIn(t *testing.T) {
	l := newLabUsers(t, []testenv.User{{Name: "alice"}, {Name: "root"}})
	priv := filepath.Join(t.TempDir(), "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", priv).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, _ := os.ReadFile(priv + ".pub")
	if err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "alice", Keys: []TitledKey{{Title: "laptop", Line: strings.TrimSpace(string(pub))}}}}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.SSHKey(nil, "127.0.0.1", l.sshd.Port, "alice", priv); err != nil {
		t.Errorf("alice's key from moat's files: %v", err)
	}
	if a, err := l.m.CheckAccess(context.Background(), nil); err != nil || !slices.Contains(a.WithKeys, "alice") {
		t.Errorf("access %+v, %v: want alice with a key", a, err)
	}
	// A directory above the keys others may not enter: refused, with the fix.
	parent := filepath.Dir(l.m.Paths.KeysDir)
	os.Chmod(parent, 0o750)
	defer os.Chmod(parent, 0o755)
	if err := l.m.SyncKeys(context.Background(), []UserKeys{{User: "alice", Keys: []TitledKey{{Title: "laptop", Line: strings.TrimSpace(string(pub))}}}}); err == nil || !strings.Contains(err.Error(), "chmod o+x "+parent) {
		t.Errorf("%v, want the refusal with chmod o+x", err)
	}
	if a, _ := l.m.CheckAccess(context.Background(), nil); slices.Contains(a.WithKeys, "alice") {
		t.Error("alice counted with a key file she cannot read")
	}
}

// TestHardenKeepsStricterSettings: the owner's MaxAuthTries 2 and
// LoginGraceTime 20 stay: moat's drop-in is read first and would win,
// so it leaves out what is stricter already.
func TestHardenKeepsStricterSettings(t *testing.T) {
	l := newLabUsers(t, []testenv.User{{Name: "root"}}, "MaxAuthTries 2", "LoginGraceTime 20")
	l.rootKey(t)
	ctx := context.Background()
	if _, _, err := l.m.Harden(ctx, HardenOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	eff, _ := l.m.Effective(ctx, "root")
	if eff.Value("maxauthtries") != "2" || eff.Value("logingracetime") != "20" || eff.Value("passwordauthentication") != "no" {
		t.Errorf("after hardening: MaxAuthTries %s, LoginGraceTime %s, PasswordAuthentication %s; want 2, 20, no",
			eff.Value("maxauthtries"), eff.Value("logingracetime"), eff.Value("passwordauthentication"))
	}
	if f, err := l.m.Audit(ctx); err != nil || len(f) != 0 {
		t.Errorf("audit: %+v, %v; stricter is no finding", f, err)
	}
}
