package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHDBinary is where scripts/test-deps.sh puts the sshd of Debian's
// openssh-server package, unpacked rather than installed so that no sshd
// service is set up on the machine that runs the tests.
const SSHDBinary = "/var/cache/moat-test/openssh/usr/sbin/sshd"

// SSHD is an OpenSSH server a test started: its own configuration, host
// key and port, logging to a file with -E. It runs in a network namespace
// (or the test's own when Netns is nil) and is stopped when the test ends.
type SSHD struct {
	// Dir holds the configuration, the host key and the log.
	Dir string
	// Config is the sshd_config file; Log is where sshd writes (-E).
	Config, Log string
	Port        int
	// Passwd, Shadow and Group are the account files sshd sees (the
	// machine's unless Users were given).
	Passwd, Shadow, Group string
	cmd                   *exec.Cmd
	bin                   string
}

// SSHDOptions set up a test's sshd.
type SSHDOptions struct {
	// Netns is where sshd listens; nil for the test's own namespace.
	Netns *Netns
	// Port is the port; a free one below the ephemeral range when 0.
	Port int
	// Config is added to the configuration: lines like
	// "PasswordAuthentication yes".
	Config []string
	// Log, when set, is the log file (sshd appends to it); Dir/sshd.log
	// when empty.
	Log string
	// Syslog sends sshd's lines to syslog (and so to journald where it
	// runs) instead of a file.
	Syslog bool
	// Include, when set, is a glob of drop-ins read first, as Debian's
	// sshd_config reads /etc/ssh/sshd_config.d/*.conf.
	Include string
	// DefaultPort leaves Port out of the configuration, so that sshd
	// listens on 22 as a fresh server's does; it needs Netns (port 22
	// of the test's own namespace is the machine's).
	DefaultPort bool
	// Users are accounts that sshd (and only sshd) sees, with their
	// passwords: it runs in a mount namespace of its own where copies of
	// /etc/passwd, /etc/shadow and /etc/group that hold them are mounted
	// over the machine's. A user named root sets root's password there.
	Users []User
}

// User is an account of a test's sshd.
type User struct {
	Name, Password string
}

// sshdPath finds sshd: where test-deps.sh unpacks it, or installed.
func sshdPath() (string, error) {
	for _, p := range []string{os.Getenv("MOAT_TEST_SSHD"), SSHDBinary, "/usr/sbin/sshd"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no sshd at %s or /usr/sbin/sshd (make test unpacks Debian's openssh-server there)", SSHDBinary)
}

// StartSSHD starts sshd for the test. It needs root (sshd checks
// passwords and separates privileges as root), sshd, ssh-keygen and the
// privilege separation user "sshd"; without them it skips the test,
// saying which is missing.
func StartSSHD(t testing.TB, o SSHDOptions) *SSHD {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("testenv: a real sshd needs root; running as uid %d", os.Geteuid())
	}
	bin, err := sshdPath()
	if err != nil {
		t.Skipf("testenv: %v", err)
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("testenv: ssh-keygen is missing (Debian package openssh-client)")
	}
	if _, err := user.Lookup("sshd"); err != nil {
		t.Skip("testenv: sshd's privilege separation user \"sshd\" does not exist (make test's scripts/test-deps.sh adds it)")
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &SSHD{Dir: t.TempDir(), Port: o.Port, bin: bin}
	switch {
	case o.DefaultPort && o.Netns == nil:
		t.Fatal("testenv: an sshd on port 22 needs a network namespace of its own")
	case o.DefaultPort:
		s.Port = 22
	case s.Port == 0:
		s.Port = FreePorts(t, 1)[0]
	}
	s.Config = filepath.Join(s.Dir, "sshd_config")
	s.Log = o.Log
	if s.Log == "" {
		s.Log = filepath.Join(s.Dir, "sshd.log")
	}
	key := filepath.Join(s.Dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("testenv: ssh-keygen: %v: %s", err, out)
	}
	var conf []string
	if o.Include != "" {
		conf = append(conf, "Include "+o.Include)
	}
	if !o.DefaultPort {
		conf = append(conf, "Port "+strconv.Itoa(s.Port))
	}
	conf = append(conf,
		"HostKey "+key,
		"PidFile none",
		"UsePAM no",
		"LogLevel INFO",
	)
	conf = append(conf, o.Config...)
	if err := os.WriteFile(s.Config, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	args := []string{bin, "-D", "-f", s.Config}
	if o.Syslog {
		s.Log = ""
	} else {
		args = append(args, "-E", s.Log)
	}
	s.Passwd, s.Shadow, s.Group = "/etc/passwd", "/etc/shadow", "/etc/group"
	if len(o.Users) > 0 {
		mounts := s.accounts(t, o.Users)
		args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + ` && exec "$@"`, "sh"}, args...)
	}
	if o.Netns != nil {
		args = append([]string{"ip", "netns", "exec", o.Netns.Name}, args...)
	}
	if out, err := exec.Command(args[0], append(args[1:], "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: sshd -t: %v: %s", err, out)
	}
	s.cmd = exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("testenv: starting sshd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-exited
	})
	// Ready when the port answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var c net.Conn
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		if o.Netns != nil {
			c, err = o.Netns.Dial(ctx, "tcp", addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
		cancel()
		if err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(s.Log)
			t.Fatalf("testenv: sshd exited: %v: %s%s", err, stderr.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: sshd did not listen on port %d within 10s", s.Port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accounts writes copies of the account files holding users, and returns
// the shell commands that mount them over the machine's.
func (s *SSHD) accounts(t testing.TB, users []User) string {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return string(b)
	}
	passwd, shadow, group := read("/etc/passwd"), read("/etc/shadow"), read("/etc/group")
	hash := func(pw string) string {
		if pw == "" {
			return "*" // no password, and not locked ("!"), which would refuse keys too
		}
		out, err := exec.Command("openssl", "passwd", "-6", pw).Output()
		if err != nil {
			t.Fatalf("testenv: openssl passwd: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	for i, u := range users {
		if u.Name == "root" {
			// root's home too is the test's, so that the machine's
			// /root/.ssh/authorized_keys plays no part.
			home := filepath.Join(s.Dir, "home", "root")
			if err := os.MkdirAll(home, 0o700); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			var pl []string
			for l := range strings.Lines(passwd) {
				if strings.HasPrefix(l, "root:") {
					f := strings.Split(strings.TrimRight(l, "\n"), ":")
					f[5] = home
					l = strings.Join(f, ":") + "\n"
				}
				pl = append(pl, l)
			}
			passwd = strings.Join(pl, "")
			var lines []string
			for l := range strings.Lines(shadow) {
				if strings.HasPrefix(l, "root:") {
					f := strings.Split(strings.TrimRight(l, "\n"), ":")
					f[1] = hash(u.Password)
					l = strings.Join(f, ":") + "\n"
				}
				lines = append(lines, l)
			}
			shadow = strings.Join(lines, "")
			continue
		}
		id := 61000 + i // far from the machine's own accounts
		home := filepath.Join(s.Dir, "home", u.Name)
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.Chown(home, id, id); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		passwd += fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh\n", u.Name, id, id, home)
		group += fmt.Sprintf("%s:x:%d:\n", u.Name, id)
		shadow += fmt.Sprintf("%s:%s:19000:0:99999:7:::\n", u.Name, hash(u.Password))
	}
	var mounts []string
	for _, f := range []struct{ name, content, over string }{{"passwd", passwd, "/etc/passwd"}, {"shadow", shadow, "/etc/shadow"}, {"group", group, "/etc/group"}} {
		p := filepath.Join(s.Dir, f.name)
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		mounts = append(mounts, "mount --bind "+p+" "+f.over)
	}
	os.Chmod(filepath.Join(s.Dir, "shadow"), 0o600)
	s.Passwd, s.Shadow, s.Group = filepath.Join(s.Dir, "passwd"), filepath.Join(s.Dir, "shadow"), filepath.Join(s.Dir, "group")
	return strings.Join(mounts, " && ")
}

// Binary is the sshd this test runs.
func (s *SSHD) Binary() string { return s.bin }

// Reload has sshd read its configuration again (SIGHUP), as systemctl
// reload ssh does, and waits until it listens again: sshd restarts
// itself, and for a moment nothing listens.
func (s *SSHD) Reload(ctx context.Context) error {
	listening := func() int {
		b, _ := os.ReadFile(s.Log)
		return bytes.Count(b, []byte("Server listening on "))
	}
	before := listening()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	if s.Log == "" {
		time.Sleep(500 * time.Millisecond) // no log to watch
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); listening() <= before; {
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: sshd did not listen again within 10s of SIGHUP")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// SSHKey tries a key login as user at addr:port from ns (nil: the test's
// own namespace) with the private key in keyFile, and returns ssh's error
// (nil when the login worked and ran true).
func SSHKey(ns *Netns, addr string, port int, user, keyFile string) error {
	return runSSH(ns, nil, "-i", keyFile, "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey",
		"-o", "BatchMode=yes", "-p", strconv.Itoa(port), user+"@"+addr, "true")
}

// runSSH runs the ssh client with the options every test wants.
func runSSH(ns *Netns, env []string, args ...string) error {
	all := append([]string{"ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3"}, args...)
	if ns != nil {
		all = append([]string{"ip", "netns", "exec", ns.Name}, all...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, all[0], all[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// SSHPassword tries a password login as user at addr:port from ns (nil:
// the test's own namespace) with the given password, and returns ssh's
// error (nil when the login worked and ran true).
func SSHPassword(ns *Netns, addr string, port int, user, password string) error {
	dir, err := os.MkdirTemp("", "moat-ssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	askpass := filepath.Join(dir, "askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\nprintf '%s\\n' "+shellQuote(password)+"\n"), 0o700); err != nil {
		return err
	}
	return runSSH(ns, []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none"},
		"-p", strconv.Itoa(port), "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
		"-o", "NumberOfPasswordPrompts=1", user+"@"+addr, "true")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// privateRoot holds the directories of PrivateDir: on /run, which root
// owns and nobody else may write, unlike /tmp.
const privateRoot = "/run/moat-test"

// PrivateDir is a directory for the test that only root can write, nor
// any directory above it, as sshd's StrictModes demands of a key file
// outside a home directory (t.TempDir is under /tmp, which everyone may
// write). It is removed when the test ends, and those of crashed test
// processes when the next one makes its first.
func PrivateDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("testenv: a directory only root can write needs root; running as uid %d", os.Geteuid())
	}
	if err := os.MkdirAll(privateRoot, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if entries, err := os.ReadDir(privateRoot); err == nil {
		for _, e := range entries {
			pid, _, _ := strings.Cut(e.Name(), "-")
			if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() && syscall.Kill(n, 0) == syscall.ESRCH {
				os.RemoveAll(filepath.Join(privateRoot, e.Name()))
			}
		}
	}
	dir, err := os.MkdirTemp(privateRoot, strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove(privateRoot) // only when empty
	})
	return dir
}
