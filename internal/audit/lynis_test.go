package audit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/sshd"
	"moat/internal/testenv"
	"moat/internal/updates"
)

// TestAgainstLynis: Lynis (Debian's) and moat judge the same server: an
// sshd set loosely (run by the test, in a namespace, with its
// configuration where Lynis looks for it, in a mount namespace of the
// test's own), a namespace with no firewall, and this machine's
// packages. Every finding Lynis raises about sshd, the firewall and
// updates is raised by moat too, with a fix.
func TestAgainstLynis(t *testing.T) {
	if _, err := exec.LookPath("lynis"); err != nil {
		t.Fatal("lynis is missing (Debian package lynis; make test's scripts/test-deps.sh installs it)")
	}
	if _, err := os.Stat(testenv.SSHDBinary); err != nil {
		t.Fatalf("sshd is missing at %s (make test's scripts/test-deps.sh unpacks it)", testenv.SSHDBinary)
	}
	ns := testenv.NewNetns(t)
	dir := testenv.PrivateDir(t)
	conf := filepath.Join(dir, "ssh")
	os.MkdirAll(conf, 0o755)
	key := filepath.Join(conf, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	config := filepath.Join(conf, "sshd_config")
	os.WriteFile(config, []byte(fmt.Sprintf("Port 22\nHostKey %s\nPidFile none\nUsePAM no\nPasswordAuthentication yes\nPermitRootLogin yes\nX11Forwarding yes\nMaxAuthTries 6\n", key)), 0o600)
	report := filepath.Join(dir, "lynis-report.dat")
	script := fmt.Sprintf(`set -e
mount --bind %[1]s /etc/ssh
mount -t tmpfs tmpfs /usr/local/sbin
cp %[2]s /usr/local/sbin/sshd
mkdir -p /run/sshd
nsenter --net=/run/netns/%[3]s /usr/local/sbin/sshd -D -f /etc/ssh/sshd_config -E %[4]s/sshd.log &
sshd=$!
trap 'kill $sshd' EXIT
for i in $(seq 50); do grep -q "Server listening" %[4]s/sshd.log 2>/dev/null && break; sleep 0.1; done
nsenter --net=/run/netns/%[3]s lynis audit system --quick --no-colors --tests-from-group "ssh firewalls ports_packages" \
  --report-file %[5]s --log-file %[4]s/lynis.log >%[4]s/lynis.out 2>&1 || true
`, conf, testenv.SSHDBinary, ns.Name, dir, report)
	if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("lynis: %v: %s", err, out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("lynis wrote no report: %v", err)
	}

	// moat, on the same: the sshd configuration, the namespace (no
	// firewall), this machine's updates.
	ctx := context.Background()
	m := &sshd.Manager{Paths: sshd.Paths{SSHD: testenv.SSHDBinary, Config: config}}
	found, err := m.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eff, err := m.Effective(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	u, err := updates.Host{}.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(Host{SSH: &found, SSHD: eff, Firewall: &Firewall{}, Updates: &u}, testNow)
	moat := map[string]Finding{}
	for _, f := range rep.Findings {
		moat[f.Check] = f
		moat[f.Check+" "+f.Subject] = f
	}

	// What moat calls each of Lynis's findings about sshd, the firewall
	// and updates; Lynis's suggestions of tools to install (debsums,
	// apt-show-versions, apt-listbugs) are about neither.
	tools := map[string]bool{"PKGS-7370": true, "PKGS-7394": true}
	matched, lynisCount := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		kind, rest, ok := strings.Cut(line, "[]=")
		if !ok || (kind != "warning" && kind != "suggestion") {
			continue
		}
		f := strings.Split(rest, "|")
		id, text, detail := f[0], f[1], ""
		if len(f) > 2 {
			detail = f[2]
		}
		var want string
		switch {
		case id == "SSH-7408":
			keyword, _, _ := strings.Cut(detail, " ")
			want = "ssh." + strings.ToLower(keyword)
			if _, ok := moat[want]; !ok {
				want = "ssh.extra " + keyword
			}
		case strings.HasPrefix(id, "SSH-"):
			want = "ssh.?"
		case strings.HasPrefix(id, "FIRE-"):
			want = "firewall.off"
		case id == "PKGS-7392":
			want = "updates.pending"
		case id == "PKGS-7420":
			want = "updates.off"
		case tools[id] || strings.HasPrefix(id, "DEB-") || id == "LYNIS":
			continue
		default:
			continue // not about sshd, the firewall or updates
		}
		lynisCount++
		got, ok := moat[want]
		if !ok || got.Fix == "" {
			t.Errorf("Lynis %s %s (%s): moat raises no %s with a fix", id, text, detail, want)
			continue
		}
		matched++
		t.Logf("Lynis %-9s %-55s moat %-28s fix: %s", id, strings.TrimSpace(text+" "+detail), want, got.Fix)
	}
	if lynisCount < 10 {
		t.Errorf("Lynis raised only %d findings about sshd, the firewall and updates: its run went wrong?\n%s", lynisCount, b)
	}
	t.Logf("Lynis raised %d findings about sshd, the firewall and updates; moat raises all %d, and %d findings in all", lynisCount, matched, len(rep.Findings))
}
