package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DockerDir is where make test's dependency script unpacks Debian's
// docker.io, containerd and runc.
const DockerDir = "/var/cache/moat-test/docker"

// dockerPrefix starts the temp directory of every dockerd a test runs,
// with the test process's pid, so a crashed run's can be found.
const dockerPrefix = "moat-docker-"

// Dockerd is a Docker daemon a test runs: in a network namespace and a
// mount namespace of its own, its state in temp dirs, its API on a
// socket of its own. It holds one image, moat-test/busybox (busybox's
// httpd, sh and sleep).
type Dockerd struct {
	Socket string
	Netns  *Netns
	// PID is dockerd's process: /proc/PID/net is its namespace's.
	PID string
	dir string
	env []string
}

// StartDockerd starts dockerd for the test (publishing ports through
// docker-proxy when userlandProxy, through nat rules alone when not),
// and stops it and its containers when the test ends. It needs root,
// the unpacked docker.io and busybox-static.
func StartDockerd(t testing.TB, userlandProxy bool) *Dockerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("testenv: dockerd needs root; running as uid %d", os.Geteuid())
	}
	for _, p := range []string{DockerDir + "/usr/sbin/dockerd", DockerDir + "/usr/bin/containerd", DockerDir + "/usr/sbin/runc", "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("testenv: %s is missing (make test's scripts/test-deps.sh unpacks docker.io, containerd and runc, and installs busybox-static)", p)
		}
	}
	killStaleDockerd()
	ns := NewNetns(t)
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dockerPrefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	d := &Dockerd{Socket: filepath.Join(dir, "docker.sock"), Netns: ns, dir: dir,
		env: append(os.Environ(), "PATH="+DockerDir+"/usr/bin:"+DockerDir+"/usr/sbin:"+os.Getenv("PATH"), "DOCKER_HOST=unix://"+filepath.Join(dir, "docker.sock"))}
	// nsenter, not ip netns exec: that one mounts a sysfs of its own,
	// which hides the cgroups dockerd needs.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "nsenter", "--net=/run/netns/"+ns.Name,
		DockerDir+"/usr/sbin/dockerd", "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://"+d.Socket, "--userland-proxy="+strconv.FormatBool(userlandProxy))
	cmd.Env = d.env
	log, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start dockerd: %v", err)
	}
	d.PID = strconv.Itoa(cmd.Process.Pid) // unshare and nsenter exec, not fork
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if ids, err := d.run("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
			d.run(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		killMatching(dir) // containerd and the shims, when dockerd left them
		log.Close()
		os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("unix", d.Socket); err == nil {
			c.Close()
			if _, err := d.run("version"); err == nil {
				break
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("testenv: dockerd exited: %s", tail(b))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("testenv: dockerd did not answer within 30s: %s", tail(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.importBusybox(t)
	return d
}

// Docker runs the docker command against this daemon, and returns its
// output; a failure fails the test.
func (d *Dockerd) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.run(args...)
	if err != nil {
		t.Fatalf("testenv: docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func (d *Dockerd) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, DockerDir+"/usr/bin/docker", args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// importBusybox makes the image moat-test/busybox from the machine's
// static busybox: no registry is reached.
func (d *Dockerd) importBusybox(t testing.TB) {
	t.Helper()
	root := filepath.Join(d.dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"sh", "httpd", "sleep"} {
		os.Symlink("busybox", filepath.Join(root, "bin", tool))
	}
	tarball, err := exec.Command("tar", "-C", root, "-c", ".").Output()
	if err != nil {
		t.Fatalf("testenv: tar the image: %v", err)
	}
	cmd := exec.Command(DockerDir+"/usr/bin/docker", "import", "-", "moat-test/busybox")
	cmd.Env, cmd.Stdin = d.env, bytes.NewReader(tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: docker import: %v: %s", err, out)
	}
}

// killMatching kills the processes whose command line names dir.
func killMatching(dir string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killStaleDockerd kills what a crashed earlier test process's dockerd
// left running, and its directory.
func killStaleDockerd() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dockerPrefix+"*"))
	for _, dir := range dirs {
		rest := strings.TrimPrefix(filepath.Base(dir), dockerPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its test process still runs
		}
		killMatching(dir)
		os.RemoveAll(dir)
	}
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
