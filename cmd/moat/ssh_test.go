package main

import (
	"strings"
	"testing"
)

const cliKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj me@laptop"

// TestSSHKeysCommands adds, lists and removes keys without a daemon: the
// keys are stored (moat serve puts them where sshd reads them); what is
// refused says why.
func TestSSHKeysCommands(t *testing.T) {
	c := newCLI(t)
	if out, err := c.run(cliKey+"\n", "ssh", "keys", "add", "--title", "laptop"); err != nil || !strings.Contains(out, "Added laptop for root: ssh-ed25519 256 SHA256:") {
		t.Fatalf("add from stdin: %v\n%s", err, out)
	}
	pub := c.file("ci.pub", `from="10.0.0.0/8" `+cliKey+"\n")
	c.ok("ssh", "keys", "add", "--title", "ci", "--user", "deploy", pub)
	list := c.ok("ssh", "keys", "list")
	for _, want := range []string{"laptop", "root", "ci", "deploy", "ssh-ed25519", "256", "SHA256:", `from="10.0.0.0/8"`} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	c.refused([]string{"ssh", "keys", "add", "--title", "again", c.file("dup.pub", cliKey)}, "ssh.keys[2].key", "already authorized for root, as ssh.keys[0] (laptop)")
	c.refused([]string{"ssh", "keys", "add", "--title", "old", c.file("dsa.pub", "ssh-dss AAAAB3NzaC1kc3MAAACBAP== old")}, "DSA")
	c.refused([]string{"ssh", "keys", "add", c.file("x.pub", cliKey)}, "--title is missing")
	priv := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
	out, err := c.run(priv, "ssh", "keys", "add", "--title", "oops")
	if err == nil || !strings.Contains(err.Error(), "PRIVATE key") || !strings.Contains(err.Error(), "leaked") || strings.Contains(err.Error()+out, "b3BlbnNzaC1rZXkt") {
		t.Errorf("a private key: %v\n%s\nwant a refusal that says it leaked, without repeating it", err, out)
	}

	// remove asks first.
	if out, err := c.run("n\n", "ssh", "keys", "remove", "laptop"); err == nil || !strings.Contains(out, "[y/N]") {
		t.Errorf("remove answered no: %v\n%s", err, out)
	}
	if !strings.Contains(c.ok("ssh", "keys", "list"), "laptop") {
		t.Fatal("a remove answered no removed the key")
	}
	if _, err := c.run("y\n", "ssh", "keys", "remove", "laptop"); err != nil {
		t.Fatal(err)
	}
	c.ok("ssh", "keys", "remove", "ci", "--yes")
	if list := c.ok("ssh", "keys", "list"); !strings.Contains(list, "No keys") {
		t.Errorf("after removing both:\n%s", list)
	}
	c.refused([]string{"ssh", "keys", "remove", "nothing", "--yes"}, "no key is called nothing")
}
