package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/daemon"
	"moat/internal/testenv"
)

// TestUserCommands: root on the box adds, lists, sets passwords of and
// removes accounts; the last admin stays; bad input names its field.
func TestUserCommands(t *testing.T) {
	c := newCLI(t)
	out, err := c.run("correct horse battery 9\n", "user", "add", "owner@example.com", "--role", "admin", "--password")
	if err != nil || !strings.Contains(out, "Added owner@example.com (admin)") || strings.Contains(out, "correct horse") {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if fi, err := os.Stat(daemon.SealerPath(c.dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the TOTP key file: %v %v", fi, err)
	}
	if out := c.ok("user", "add", "ops@example.com", "--role", "operator"); !strings.Contains(out, "Invitation (shown once") {
		t.Errorf("an invitation: %s", out)
	}
	if _, err := c.run("password\n", "user", "add", "weak@example.com", "--password"); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("a common password: %v", err)
	}
	c.refused([]string{"user", "add", "not-an-address"}, "email", "not an email address")
	c.refused([]string{"user", "add", "x@example.com", "--role", "root"}, "role", "admin, operator or viewer")

	list := c.ok("user", "list")
	for _, want := range []string{"owner@example.com", "admin", "ops@example.com", "(invited)"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	if _, err := c.run("another long passphrase 7\n", "user", "passwd", "owner@example.com"); err != nil {
		t.Errorf("passwd: %v", err)
	}
	if out := c.ok("user", "reset-mfa", "owner@example.com"); !strings.Contains(out, "email") {
		t.Errorf("reset-mfa: %s", out)
	}
	if _, err := c.run("n\n", "user", "remove", "ops@example.com"); err == nil {
		t.Error("remove went ahead on no")
	}
	if _, err := c.run("y\n", "user", "remove", "owner@example.com"); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("the last admin was removed: %v", err)
	}
	c.ok("user", "remove", "ops@example.com", "--yes")
	if list := c.ok("user", "list"); strings.Contains(list, "ops@") {
		t.Errorf("still listed:\n%s", list)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "moat.db")); err != nil {
		t.Fatal(err)
	}
}

// TestInitFirstAdmin: moat init makes the first admin, once: with the
// password typed on a terminal (a pseudo-terminal from script(1), which
// the password must not be echoed to), or else with an invitation.
func TestInitFirstAdmin(t *testing.T) {
	c := newCLI(t)
	out := c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	if !strings.Contains(out, "Added the first admin, admin@example.com (admin).") || !strings.Contains(out, "Invitation (shown once, valid 24 hours): ") {
		t.Errorf("init without a terminal:\n%s", out)
	}
	if list := c.ok("user", "list"); !strings.Contains(list, "admin@example.com") || !strings.Contains(list, "(invited)") {
		t.Errorf("after init:\n%s", list)
	}
	if out := c.ok("init", "--email", "ops@example.com"); strings.Contains(out, "first admin") {
		t.Errorf("init again made another admin:\n%s", out)
	}

	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("this test needs script (Debian package bsdutils)")
	}
	bin := testenv.MoatBinary(t)
	dir := t.TempDir()
	line := strings.Join([]string{bin, "--data-dir", dir, "--socket", filepath.Join(dir, "no.sock"), "init", "--domain", "moat.example.com", "--email", "owner@example.com"}, " ")
	cmd := exec.Command("script", "-qec", line, "/dev/null")
	// The password is typed once the prompt is shown, as a person does:
	// what the terminal gets before it would be echoed.
	stdin, _ := cmd.StdinPipe()
	var outBuf testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(outBuf.String(), "Password for") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	io.WriteString(stdin, "correct horse battery 9\n")
	err := cmd.Wait()
	tty := outBuf.String()
	if err != nil || !strings.Contains(tty, "Password for the first admin, owner@example.com") || !strings.Contains(tty, "Added the first admin, owner@example.com (admin).") ||
		strings.Contains(tty, "Invitation") || strings.Contains(tty, "correct horse") {
		t.Fatalf("init on a terminal: %v\n%s", err, tty)
	}
	c2 := &cli{t: t, dir: dir, sock: filepath.Join(dir, "no.sock")}
	if list := c2.ok("user", "list"); !strings.Contains(list, "owner@example.com") || strings.Contains(list, "(invited)") {
		t.Errorf("after init on a terminal, the admin has no password:\n%s", list)
	}
}
