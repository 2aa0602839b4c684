package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestGuardTestCommand reads small logs through the sshd jail and through
// filters given on the command line: the lines matched, the failures per
// address, the bans the settings make, the lines that read like failures
// the filter missed; and a bad filter or jail is refused by name.
func TestGuardTestCommand(t *testing.T) {
	c := newCLI(t)
	seedStore(t, c.dir, func(s *config.State) {
		s.Guard.Jails = []config.Jail{{Name: "gitea", Log: "/var/log/gitea.log", Filter: `Failed authentication attempt for (?P<user>\S+) from (?P<addr>\S+)`, MaxRetry: 2, FindTime: "1m", BanTime: "1h"}}
	})
	var auth strings.Builder
	for i := range 6 {
		fmt.Fprintf(&auth, "Nov 21 07:00:%02d vps sshd[%d]: Failed password for root from 203.0.113.7 port %d ssh2\n", i*5, 100+i, 40000+i)
	}
	auth.WriteString("Nov 21 07:01:00 vps sshd[200]: Invalid user admin from 2001:db8::5 port 50000\n" +
		"Nov 21 07:01:01 vps sshd[201]: Invalid user oracle from 2001:db8::5 port 50001\n" +
		"Nov 21 07:01:02 vps sshd[202]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.9\n" +
		"Nov 21 07:02:00 vps sshd[300]: Accepted publickey for owner from 192.0.2.1 port 51000 ssh2: ED25519 SHA256:abc\n" +
		"Nov 21 07:03:00 vps CRON[400]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)\n")
	log := c.file("auth.log", auth.String())

	out := c.ok("guard", "test", log)
	for _, want := range []string{
		"Read 11 lines in ", "through jail sshd: 5 failures within 10m ban for 10m.",
		"Matched 8 lines:", "Failures per address: 2 addresses, the most first:",
		"\n  203.0.113.7                              6\n  2001:db8::5                              2\n",
		"Would ban 1 address, in the order of their first ban:\n  203.0.113.7/32                           first at 2026-11-21 07:00:20, once, the longest for 10m\n",
		"Not matched, but they read like failures: 1 line:\n  Nov 21 07:01:02 vps sshd[202]: pam_unix(sshd:auth): authentication failure",
	} {
		if !strings.Contains(out, strings.Replace(want, "2026", fmt.Sprint(time.Now().Year()), 1)) {
			t.Errorf("moat guard test lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Accepted publickey") || strings.Contains(out, "CRON") {
		t.Errorf("a line that is no failure is shown:\n%s", out)
	}

	// A jail's own filter and settings, on standard input.
	gitea := "2026-11-21T07:00:01Z Failed authentication attempt for bob from 198.51.100.20\n" +
		"2026-11-21T07:00:30Z Failed authentication attempt for bob from 198.51.100.20\n" +
		"2026-11-21T07:05:00Z Failed authentication attempt for eve from 198.51.100.21\n"
	out, err := c.run(gitea, "guard", "test", "--jail", "gitea", "--show", "1", "-")
	if err != nil {
		t.Fatalf("--jail gitea: %v\n%s", err, out)
	}
	for _, want := range []string{"through jail gitea: 2 failures within 1m ban for 1h.", "Matched 3 lines; the first 1:", "Failures per address: 2 addresses; the first 1, the most first:\n  198.51.100.20 ", "Would ban 1 address", "first at 2026-11-21 07:00:30, once, the longest for 1h"} {
		if !strings.Contains(out, want) {
			t.Errorf("--jail gitea lacks %q:\n%s", want, out)
		}
	}
	out, err = c.run(gitea, "guard", "test", "--filter", `attempt for (?P<user>\S+) from (?P<addr>\S+)`, "--literal", "attempt for", "-")
	if err != nil || !strings.Contains(out, "through jail test: 5 failures within 10m ban for 10m.") || !strings.Contains(out, "Matched 3 lines:") || !strings.Contains(out, "Would ban 0 addresses.") {
		t.Errorf("--filter: %v\n%s", err, out)
	}

	for _, b := range []struct {
		args []string
		want []string
	}{
		{[]string{"guard", "test", "--filter", `from (?P<address>\S+)`, log}, []string{"--filter", "has no group named addr (it has (?P<address>...))", "name the group of the client's address addr"}},
		{[]string{"guard", "test", "--filter", `for (?P<name>\S+) from (?P<addr>\S+)`, log}, []string{"a group moat does not read: (?P<name>...)", "addr, user and port"}},
		{[]string{"guard", "test", "--filter", `from (?P<addr>[`, log}, []string{"does not compile"}},
		{[]string{"guard", "test", "--jail", "nope", log}, []string{`--jail "nope" is not a jail`, "gitea"}},
		{[]string{"guard", "test", "--jail", "moat", log}, []string{`--jail "moat"`, "no filter to test"}},
		{[]string{"guard", "test", "--jail", "gitea", "--filter", "x", log}, []string{"jail", "filter"}},
		{[]string{"guard", "test", filepath.Join(c.dir, "missing.log")}, []string{"the log to test", "missing.log"}},
	} {
		c.refused(b.args, b.want...)
	}
}
