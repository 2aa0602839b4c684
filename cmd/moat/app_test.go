package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"moat/internal/audit"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/testenv"
)

// TestAppLifecycleProtected: an app's lifecycle commands from moat.yaml
// run through moat app; while the app is protected, stop, restart,
// upgrade and remove are refused and the app (a real process) keeps
// running; unprotected, moat app stop stops it.
func TestAppLifecycleProtected(t *testing.T) {
	proc := exec.Command("sleep", "300")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { proc.Wait(); close(exited) }()
	t.Cleanup(func() { proc.Process.Kill(); <-exited })
	pid := proc.Process.Pid

	c := newCLI(t)
	c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	yaml := c.ok("export") + fmt.Sprintf(`apps:
  - name: gitea
    domains: [git.example.com]
    upstream: http://127.0.0.1:3000
    protect: true
    run:
      stop: kill %[1]d
      restart: kill %[1]d
      upgrade: kill %[1]d
      status: kill -0 %[1]d && echo gitea is running
`, pid)
	if out, err := c.run(yaml, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, action := range []string{"stop", "restart", "upgrade"} {
		c.refused([]string{"app", action, "gitea"}, "protected against termination", "moat app set gitea --protect=false")
	}
	c.refused([]string{"app", "remove", "gitea", "--confirm", "gitea"}, "protected against termination")
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("the protected app's process is gone")
	}
	if out := c.ok("app", "status", "gitea"); !strings.Contains(out, "gitea is running") {
		t.Errorf("status: %q", out)
	}
	c.ok("app", "set", "gitea", "--protect=false")
	c.ok("app", "stop", "gitea")
	<-exited
	if _, err := c.run("", "app", "status", "gitea"); err == nil || !strings.Contains(err.Error(), "exited 1") {
		t.Errorf("status of a stopped app: %v", err)
	}
	if out := c.ok("activity", "--limit", "20"); !strings.Contains(out, "app.stop_refused") || !strings.Contains(out, "protection.off") || !strings.Contains(out, "app.stop ") {
		t.Errorf("activity:\n%s", out)
	}
	if out, err := c.run("gitea\n", "app", "remove", "gitea"); err != nil {
		t.Errorf("remove with the name typed back: %v\n%s", err, out)
	}
}

// TestAppAddCompose: moat app add --compose takes the published ports
// (not those on loopback) as the app's ports, and docker compose as its
// lifecycle.
func TestAppAddCompose(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	file := c.file("compose.yaml", "services:\n  web:\n    ports: [\"3000:3000\", \"127.0.0.1:2222:22\"]\n  db:\n    ports: [\"5432:5432\"]\n")
	out := c.ok("app", "add", "gitea", "--domain", "git.example.com", "--upstream", "http://127.0.0.1:3000", "--compose", file, "--port", "5432/tcp=private:203.0.113.0/24")
	for _, want := range []string{"3000/tcp (service web) is an app port", "2222/tcp (service web) is published on 127.0.0.1 only"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	exported := c.ok("export")
	for _, want := range []string{"port: 3000/tcp", "port: 5432/tcp", "203.0.113.0/24", "docker compose -f " + file + " up -d"} {
		if !strings.Contains(exported, want) {
			t.Errorf("export lacks %q:\n%s", want, exported)
		}
	}
	if strings.Contains(exported, "2222") {
		t.Errorf("a loopback port became an app port:\n%s", exported)
	}
	c.refused([]string{"app", "add", "wiki", "--domain", "wiki.example.com", "--upstream", "http://127.0.0.1:3001", "--compose", c.file("bad.yaml", "services: {web: {ports: [\"${PORT}:80\"]}}")}, "uses a variable")
}

// TestBackupCommands: moat backup init prints the password once, makes
// the repository, and backs an app's data and moat itself up; a data
// path that does not exist is refused by field.
func TestBackupCommands(t *testing.T) {
	testenv.NeedRestic(t)
	c := newCLI(t)
	c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	c.refused([]string{"backup", "init"}, "backup.repositories", "is empty")
	data := filepath.Join(t.TempDir(), "srv", "gitea")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "app.ini"), []byte("[server]\n"), 0o644)
	repo := filepath.Join(t.TempDir(), "restic")
	yaml := c.ok("export") + fmt.Sprintf(`backup:
  repositories: [{name: local, url: %s}]
  keep: {daily: 2}
apps:
  - name: gitea
    domains: [git.example.com]
    upstream: http://127.0.0.1:3000
    data: [%s]
  - name: wiki
    domains: [wiki.example.com]
    upstream: http://127.0.0.1:3001
    data: [/nonexistent/wiki]
`, repo, data)
	if out, err := c.run(yaml, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out := c.ok("backup", "init")
	if !strings.Contains(out, "The repositories' password:") || !strings.Contains(out, "without it the backups cannot be read") {
		t.Errorf("init:\n%s", out)
	}
	if again := c.ok("backup", "init"); strings.Contains(again, "password:") {
		t.Errorf("the password is shown a second time:\n%s", again)
	}
	out = c.ok("backup", "run", "gitea")
	if !strings.Contains(out, "local: snapshot ") || !regexp.MustCompile(`local: +\d+%  .* of .*  \d+ of 1 files`).MatchString(out) {
		t.Errorf("run gitea, with its progress:\n%s", out)
	}
	if out := c.ok("backup", "forget", "gitea"); !strings.Contains(out, "local: kept 1 snapshots, removed 0") {
		t.Errorf("forget gitea:\n%s", out)
	}
	if out := c.ok("backup", "run"); !strings.Contains(out, "local: snapshot ") {
		t.Errorf("run moat:\n%s", out)
	}
	if out := c.ok("backup", "list", "gitea"); !strings.Contains(out, "srv/gitea") {
		t.Errorf("list gitea:\n%s", out)
	}
	c.refused([]string{"backup", "run", "wiki"}, "data[0]", "/nonexistent/wiki", "does not exist")
	to := filepath.Join(t.TempDir(), "restore")
	if out := c.ok("backup", "restore", "gitea", "--to", to); !strings.Contains(out, "is under "+to) {
		t.Errorf("restore:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(to, data, "app.ini")); err != nil || string(b) != "[server]\n" {
		t.Errorf("the restored file: %q %v", b, err)
	}
	c.refused([]string{"backup", "restore", "gitea", "--to", to}, "target", "is not empty")
	if out := c.ok("backup", "verify"); !strings.Contains(out, "local: ok") {
		t.Errorf("verify:\n%s", out)
	}
	if out := c.ok("activity", "--limit", "10"); !strings.Contains(out, "backup.run") {
		t.Errorf("activity:\n%s", out)
	}
}

// TestAuditCommand: moat audit prints the score and each finding with
// its fix, --json the report, and fix refuses what moat does not fix.
func TestAuditCommand(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	// A listener on every address: with no daemon, no firewall holds it.
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	out := c.ok("audit")
	if !strings.HasPrefix(out, "Score: ") || !strings.Contains(out, "0.0.0.0:"+port+" (tcp) and the internet can reach it") || !strings.Contains(out, "Fix: ") {
		t.Errorf("moat audit:\n%s", out)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(c.ok("audit", "--json")), &rep); err != nil || rep.Score < 0 || rep.Score > 100 || len(rep.Findings) == 0 {
		t.Errorf("moat audit --json: %+v %v", rep, err)
	}
	c.refused([]string{"audit", "fix", "ssh.passwordauthentication"}, "is not a finding moat fixes itself")
}

// TestAuditFixCommand: moat audit fix, against a daemon whose firewall is
// in a namespace, shows what it found and the rules it puts back before
// it applies them, and the rule added by hand is gone after.
func TestAuditFixCommand(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIPPED: this test needs nft (Debian package nftables); make test installs it")
	}
	ns := testenv.NewNetns(t)
	bin := testenv.MoatBinary(t)
	c := newCLI(t)
	c.sock = filepath.Join(c.dir, "moat.sock")
	seedStore(t, c.dir, func(s *config.State) {
		s.Server = config.Server{
			Listen:   config.Listen{HTTP: "127.0.0.1:8080", HTTPS: "127.0.0.1:8443", Admin: "127.0.0.1:0"},
			Resolver: "127.0.0.1:53",
		}
		s.Firewall.Rules = []config.FirewallRule{{Port: "22/tcp", Comment: "ssh"}, {Port: "5432/tcp", From: []string{"10.0.0.0/8"}}}
		s.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Off: true}}
	})
	startDaemonUnder(t, []string{"ip", "netns", "exec", ns.Name}, bin, c.dir, c.sock, "--firewall=true")
	t.Setenv("SSH_CONNECTION", "")

	ns.Run(t, "nft", "insert", "rule", "inet", firewall.Table, "input", "tcp", "dport", "6379", "accept")
	out := c.ok("audit", "fix", "firewall.drift")
	for _, want := range []string{
		"Found: moat's table in the kernel is not what moat applied",
		"tcp dport 6379 accept",
		"The fix puts moat's stored rules in force, and only them:\n  allow 22/tcp from anyone\n  allow 5432/tcp from 10.0.0.0/8\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("moat audit fix firewall.drift lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "  allow 5432/tcp from 10.0.0.0/8\nIn force.\n") {
		t.Errorf("the outcome does not follow the plan:\n%s", out)
	}
	if table := ns.Run(t, "nft", "list", "table", "inet", firewall.Table); strings.Contains(table, "6379") || !strings.Contains(table, "5432") {
		t.Errorf("after the fix, moat's table:\n%s", table)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(c.ok("audit", "--json")), &rep); err != nil || !slices.Contains(rep.Passed, "firewall.drift") {
		t.Errorf("after the fix, firewall.drift does not pass: %+v %v", rep, err)
	}
}
