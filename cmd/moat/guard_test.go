package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/config"
	"moat/internal/testenv"
)

// TestGuardCommandsWithoutDaemon: the ignore list is stored; bans need
// the daemon and say so.
func TestGuardCommandsWithoutDaemon(t *testing.T) {
	c := newCLI(t)
	if out := c.ok("guard", "list"); !strings.Contains(out, "No moat daemon runs") || !strings.Contains(out, "sshd") {
		t.Errorf("list:\n%s", out)
	}
	c.ok("guard", "ignore", "203.0.113.0/24")
	if out := c.ok("guard", "list"); !strings.Contains(out, "Never banned: loopback, 203.0.113.0/24") {
		t.Errorf("list after ignore:\n%s", out)
	}
	bad := []struct {
		args []string
		want []string
	}{
		{[]string{"guard", "ban", "203.0.113.7"}, []string{"no running moat daemon"}},
		{[]string{"guard", "ban", "not-an-address"}, []string{"address", "not-an-address", "203.0.113.7"}},
		{[]string{"guard", "ignore", "203.0.113.9"}, []string{"ignore-listed already, by 203.0.113.0/24"}},
		{[]string{"guard", "ignore", "10.0.0.1/8"}, []string{"address", "10.0.0.1/8"}},
		{[]string{"guard", "unignore", "198.51.100.1"}, []string{"not on the ignore list"}},
		{[]string{"guard", "ignore-me"}, []string{"SSH_CONNECTION"}},
	}
	t.Setenv("SSH_CONNECTION", "")
	for _, b := range bad {
		c.refused(b.args, b.want...)
	}
	c.ok("guard", "unignore", "203.0.113.0/24")
	if act := c.ok("activity"); strings.Count(act, "guard.change") != 2 {
		t.Errorf("activity:\n%s", act)
	}
}

// TestGuardCommands bans, lists, refuses and lifts through a running moat
// serve (without the firewall: the kernel side is tested in the daemon's
// tests, in namespaces).
func TestGuardCommands(t *testing.T) {
	bin := testenv.MoatBinary(t)
	c := newCLI(t)
	c.sock = filepath.Join(c.dir, "moat.sock")
	seedStore(t, c.dir, func(s *config.State) {
		s.Server = config.Server{
			Listen:   config.Listen{HTTP: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), HTTPS: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Admin: "127.0.0.1:0"},
			Resolver: fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
		}
		s.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Off: true}} // not the host's log
	})
	startDaemon(t, bin, c.dir, c.sock)

	if out := c.ok("guard", "ban", "203.0.113.7", "--for", "1h", "--reason", "spam"); !strings.Contains(out, "Banned 203.0.113.7/32 until") {
		t.Errorf("ban: %s", out)
	}
	c.ok("guard", "ban", "2001:db8::/48", "--for", "0")
	list := c.ok("guard", "list")
	for _, want := range []string{"203.0.113.7/32", "manual", "spam", "2001:db8::/48", "until lifted"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	t.Setenv("SSH_CONNECTION", "198.51.100.20 50022 10.0.0.1 22")
	for _, b := range []struct {
		args []string
		want string
	}{
		{[]string{"guard", "ban", "127.0.0.1"}, "loopback"},
		{[]string{"guard", "ban", "198.51.100.0/24"}, "contains your own address 198.51.100.20"},
		{[]string{"guard", "ban", "203.0.113.8", "--for", "soon"}, "for"},
		{[]string{"guard", "unban", "203.0.113.99"}, "not banned"},
	} {
		if out, err := c.run("", b.args...); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("moat %s: %v (%s), want a refusal naming %q", strings.Join(b.args, " "), err, out, b.want)
		}
	}
	// ignore-me lifts a ban of the caller's own address.
	t.Setenv("SSH_CONNECTION", "203.0.113.7 50022 10.0.0.1 22")
	c.ok("guard", "ignore-me")
	list = c.ok("guard", "list")
	if strings.Contains(list, "203.0.113.7/32  ") || !strings.Contains(list, "Never banned: loopback, 203.0.113.7/32") {
		t.Errorf("after ignore-me:\n%s", list)
	}
	c.ok("guard", "unban", "2001:db8::/48")
	if out := c.ok("guard", "stats"); !strings.Contains(out, "Bans in force: 0") || !strings.Contains(out, "manual") {
		t.Errorf("stats:\n%s", out)
	}
	act := c.ok("activity")
	for _, want := range []string{"guard.ban", "guard.unban", "203.0.113.7/32", "ignore-listed"} {
		if !strings.Contains(act, want) {
			t.Errorf("activity lacks %q:\n%s", want, act)
		}
	}
}
