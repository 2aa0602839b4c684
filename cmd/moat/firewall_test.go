package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFirewallCommands runs the firewall commands without a daemon: the
// rules are stored, listed and planned; what needs the kernel says so.
func TestFirewallCommands(t *testing.T) {
	c := newCLI(t)
	c.ok("firewall", "allow", "22/tcp", "--comment", "ssh")
	c.ok("firewall", "allow", "5432/tcp", "from", "203.0.113.0/24,::ffff:198.51.100.7", "--comment", "office")
	c.ok("firewall", "allow", "60000-61000/udp")
	list := c.ok("firewall", "list")
	for _, want := range []string{"22/tcp", "any", "ssh", "5432/tcp", "203.0.113.0/24,198.51.100.7/32", "office", "60000-61000/udp", "moat serve puts them in force"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	if plan := c.ok("firewall", "plan"); !strings.Contains(plan, "+ allow 5432/tcp from 203.0.113.0/24,198.51.100.7/32") {
		t.Errorf("plan:\n%s", plan)
	}

	bad := []struct {
		args []string
		want []string
	}{
		{[]string{"firewall", "allow", "70000/tcp"}, []string{"firewall.rules[3].port", "70000/tcp", "from 1 to 65535"}},
		{[]string{"firewall", "allow", "22/sctp"}, []string{"not tcp or udp", "PORT/tcp or PORT/udp"}},
		{[]string{"firewall", "allow", "80/tcp", "from", "10.0.0.1/8"}, []string{"firewall.rules[3].from[0]", "write 10.0.0.0/8"}},
		{[]string{"firewall", "allow", "22/tcp"}, []string{"firewall.rules[3]", "22/tcp", "remove one of the two"}},
		{[]string{"firewall", "allow", "5432/tcp", "to", "x"}, []string{"PORT/PROTO from SOURCE"}},
		{[]string{"firewall", "deny", "8080/tcp"}, []string{"no rule opens 8080/tcp"}},
		{[]string{"firewall", "delete", "9"}, []string{"1 to 3"}},
		{[]string{"firewall", "apply"}, []string{"no running moat daemon manages the firewall"}},
		{[]string{"firewall", "confirm"}, []string{"no running moat daemon manages the firewall"}},
	}
	for _, b := range bad {
		c.refused(b.args, b.want...)
	}

	c.ok("firewall", "deny", "5432/tcp")
	c.ok("firewall", "delete", "2")
	if list := c.ok("firewall", "list"); strings.Contains(list, "5432") || strings.Contains(list, "60000") || !strings.Contains(list, "22/tcp") {
		t.Errorf("after deny and delete:\n%s", list)
	}
	if act := c.ok("activity"); strings.Count(act, "firewall.change") != 5 {
		t.Errorf("activity has %d firewall changes, want 5:\n%s", strings.Count(act, "firewall.change"), act)
	}
}

func TestInitOpensSSHAndTheEdge(t *testing.T) {
	c := newCLI(t)
	if err := os.MkdirAll(filepath.Join(c.dir, "sshd_config.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.file("sshd_config.d/port.conf", "Port 2222\n")
	conf := c.file("sshd_config", "# moat test\nInclude sshd_config.d/*.conf\nPasswordAuthentication no\nPort 22\nMatch User backup\n  Port 9999\n")
	out := c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com", "--sshd-config", conf)
	for _, want := range []string{"opened 2222/tcp (ssh)", "opened 22/tcp (ssh)", "opened 80/tcp", "opened 443/tcp"} {
		if !strings.Contains(out, want) {
			t.Errorf("init said:\n%s\nlacks %q", out, want)
		}
	}
	if strings.Contains(out, "9999") {
		t.Errorf("a Port under Match was opened:\n%s", out)
	}
	// A second init changes the settings and leaves the rules alone.
	out = c.ok("init", "--email", "ops@example.com", "--sshd-config", conf)
	if strings.Contains(out, "opened") {
		t.Errorf("the second init opened ports again:\n%s", out)
	}
	if list := c.ok("firewall", "list"); strings.Count(list, "/tcp") != 4 {
		t.Errorf("rules after two inits:\n%s", list)
	}
	// No readable sshd configuration: 22, and a note.
	c2 := newCLI(t)
	out = c2.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com", "--sshd-config", "/nonexistent/sshd_config")
	if !strings.Contains(out, "opened 22/tcp") || !strings.Contains(out, "assumed on port 22") {
		t.Errorf("init without sshd's configuration:\n%s", out)
	}
}

func TestAppPortsFromTheCLI(t *testing.T) {
	c := newCLI(t)
	c.ok("app", "add", "db", "--domain", "db.example.com", "--upstream", "http://127.0.0.1:8080",
		"--port", "5432/tcp=private:203.0.113.0/24", "--port", "6379", "--port", "27015/udp=public")
	list := c.ok("firewall", "list")
	for _, want := range []string{"app db: 5432/tcp from 203.0.113.0/24 (private)", "app db: 6379/tcp from 10.0.0.0/8", "(internal)", "app db: 27015/udp (public)"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	if _, err := c.run("", "firewall", "deny", "6379/tcp"); err == nil || !strings.Contains(err.Error(), "app db's port") {
		t.Errorf("deny of an app's port: %v", err)
	}
	if _, err := c.run("", "app", "set", "db", "--port", "5432/tcp=private"); err == nil || !strings.Contains(err.Error(), "ports[0].from") {
		t.Errorf("a private port without sources: %v", err)
	}
	c.ok("app", "set", "db", "--no-ports")
	if list := c.ok("firewall", "list"); strings.Contains(list, "app db") {
		t.Errorf("ports still listed after --no-ports:\n%s", list)
	}
}
