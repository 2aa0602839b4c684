package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/daemon"
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
