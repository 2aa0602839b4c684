package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// netnsDir is where iproute2 keeps named network namespaces: one
	// bind-mounted file per namespace, named after it.
	netnsDir = "/run/netns"

	// netnsPrefix starts the name of every namespace NewNetns creates. The
	// process ID follows it, so that a later process can tell the
	// namespaces of a crashed run from those of a running one.
	netnsPrefix = "moat-"
)

// Netns is a network namespace made for one test, with iproute2. Nothing a
// test does through it touches the host's network: interfaces, addresses,
// routes, sysctls and nftables rules all live inside the namespace and go
// away with it.
type Netns struct {
	// Name is the namespace's name, as "ip netns" knows it:
	// "moat-<pid>-<6 random hex digits>".
	Name string

	// links counts the veth interfaces Link has put in the namespace,
	// to name the next one.
	links atomic.Int32
}

// NewNetns creates a network namespace with its loopback interface up, and
// deletes it when the test ends. First it deletes any namespace left by an
// earlier test process that is no longer running ("moat-<pid>-*" with a
// dead pid), since a crashed run never reaches its cleanups.
//
// It needs root and the ip command of iproute2; without them it skips the
// test, saying which is missing. (make test runs as root with iproute2.)
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Skipf("testenv: network namespaces need root; running as uid %d", uid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("testenv: network namespaces need the ip command of iproute2 on PATH")
	}
	removeStaleNetns(t)

	n := &Netns{Name: fmt.Sprintf("%s%d-%06x", netnsPrefix, os.Getpid(), rand.N(1<<24))}
	ip(t, "netns", "add", n.Name)
	t.Cleanup(func() {
		if _, err := runIP("netns", "delete", n.Name); err != nil {
			t.Errorf("testenv: removing network namespace: %v", err)
		}
	})
	ip(t, "-n", n.Name, "link", "set", "lo", "up")
	// No duplicate address detection on the interfaces Link adds, for
	// their link-local addresses too: a router forwarding IPv6 solicits
	// neighbors from its link-local address, and until DAD ends (a second
	// or two) it has none to send from, so packets wait.
	n.sysctl(t, "net.ipv6.conf.all.accept_dad", "0")
	n.sysctl(t, "net.ipv6.conf.default.accept_dad", "0")
	return n
}

// removeStaleNetns deletes the namespaces of test processes that are gone.
// It is cheap enough to run before every NewNetns. (Namespaces of a dead
// process whose pid a running one has taken wait for that one to end.)
func removeStaleNetns(t testing.TB) {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return // No namespaces yet (or none we could list, and then none to delete).
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // Running, or not ours to judge.
		}
		// Another process may be removing it too: only a namespace that is
		// still there is worth a word.
		if _, err := runIP("netns", "delete", e.Name()); err != nil && exists(filepath.Join(netnsDir, e.Name())) {
			t.Logf("testenv: removing stale network namespace: %v", err)
		}
	}
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Process starts a process that stays in the namespace until the test
// ends, and returns its pid: /proc/PID/net is the namespace's.
func (n *Netns) Process(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.Name, "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: a process in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output. It fails the test, showing the command and its output,
// if the command fails.
func (n *Netns) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.RunErr(args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return out
}

// RunErr is Run returning the error instead of failing the test. The error
// holds the command and its output.
func (n *Netns) RunErr(args ...string) (string, error) {
	return runIP(append([]string{"netns", "exec", n.Name}, args...)...)
}

// Do runs f on an OS thread that is inside the namespace, and returns its
// error. Sockets f opens stay in the namespace after Do returns, so f can
// open listeners and connections for the calling test to use.
//
// f runs on a goroutine of its own, locked to its thread: it must not call
// t.FailNow (t.Fatal) but return an error instead. A panic in f is raised
// again in the caller. Names f resolves go through the host's resolver
// configuration; use IP addresses.
func (n *Netns) Do(f func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any // what f panicked with
	}
	done := make(chan result, 1)
	go func() {
		// Stays the result if f ends its goroutine instead of returning.
		r := result{err: fmt.Errorf("testenv: in network namespace %s: the function called runtime.Goexit (t.FailNow?)", n.Name)}
		defer func() { done <- r }()
		defer func() {
			if v := recover(); v != nil {
				r = result{panicked: true, value: v}
			}
		}()
		r.err = n.doOnThread(f)
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// doOnThread switches the calling goroutine's thread into the namespace,
// runs f and switches back. It leaves the goroutine locked to the thread
// if switching back fails, so that the runtime ends the thread with the
// goroutine instead of running other goroutines in the namespace.
func (n *Netns) doOnThread(f func() error) (err error) {
	target, err := os.Open(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return fmt.Errorf("testenv: opening network namespace: %w", err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testenv: opening this thread's network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testenv: entering network namespace %s: setns: %w", n.Name, err)
	}
	defer func() {
		if backErr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); backErr != nil {
			err = errors.Join(err, fmt.Errorf("testenv: leaving network namespace %s: setns: %w", n.Name, backErr))
			return // Stay locked: see above.
		}
		runtime.UnlockOSThread()
	}()
	return f()
}

// Listen opens a listener inside the namespace, as net.Listen does ("tcp",
// "tcp4", "tcp6"), and closes it when the test ends. For UDP, use
// ListenPacket.
func (n *Netns) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("testenv: listening on %s %s in network namespace %s: %v", network, addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Accepting listens on addr in the namespace and closes each connection
// it accepts, until the test ends: a port that answers, for tests of who
// can reach it.
func (n *Netns) Accepting(t testing.TB, network, addr string) {
	t.Helper()
	ln := n.Listen(t, network, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// ListenPacket opens a packet socket inside the namespace, as
// net.ListenPacket does ("udp", "udp4", "udp6", ...), and closes it when
// the test ends.
func (n *Netns) ListenPacket(t testing.TB, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("testenv: listening on %s %s in network namespace %s: %v", network, addr, n.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// Dial connects to addr from inside the namespace, as net.Dialer's
// DialContext does, with ctx bounding the attempt. The caller closes the
// connection.
func (n *Netns) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Link joins namespaces a and b with a veth pair, gives each end its
// addresses, brings both up and waits until they carry traffic. It returns the names of the ends, in a and
// in b: "veth0", "veth1", ... in the order Link adds them to a namespace,
// for tests (and nftables rules) that match on interfaces.
//
// IPv6 addresses are added without duplicate address detection, so that
// they are usable at once. The pair is created inside the namespaces, so
// its names never meet the host's interfaces.
func Link(t testing.TB, a *Netns, aAddrs []netip.Prefix, b *Netns, bAddrs []netip.Prefix) (aIf, bIf string) {
	t.Helper()
	ka, kb := int(a.links.Add(1)-1), int(b.links.Add(1)-1)
	aIf, bIf = "veth"+strconv.Itoa(ka), "veth"+strconv.Itoa(kb)
	ip(t, "-n", a.Name, "link", "add", aIf, "index", strconv.Itoa(vethIndexBase+2*ka),
		"type", "veth", "peer", "name", bIf, "index", strconv.Itoa(vethIndexBase+2*kb+1), "netns", b.Name)
	ends := []struct {
		ns    *Netns
		iface string
		addrs []netip.Prefix
	}{{a, aIf, aAddrs}, {b, bIf, bAddrs}}
	for _, end := range ends {
		for _, p := range end.addrs {
			args := []string{"-n", end.ns.Name, "addr", "add", p.String(), "dev", end.iface}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			ip(t, args...)
		}
		ip(t, "-n", end.ns.Name, "link", "set", end.iface, "up")
	}
	for _, end := range ends {
		ipv6 := slices.ContainsFunc(end.addrs, func(p netip.Prefix) bool { return p.Addr().Is6() })
		if err := end.ns.waitReady(end.iface, ipv6); err != nil {
			t.Fatal(err)
		}
	}
	return aIf, bIf
}

// vethIndexBase is the lowest interface index Link gives a veth end: far
// above the indexes the kernel hands out to interfaces a test adds itself
// (2, 3, ...), so that they never collide. Ends in a get even indexes and
// ends in b odd ones, unique in each namespace thanks to the per-namespace
// count, and never equal to their peer's. The kernel takes a veth end
// whose index equals its peer's (as the first veth of two new namespaces
// would be) for a stacked device, and so defers its carrier change to the
// link watcher's next run, up to a second later, for the whole machine.
const vethIndexBase = 1000

// linkReadyTimeout bounds how long Link waits for the kernel to finish
// bringing an interface up.
const linkReadyTimeout = 10 * time.Second

// waitReady waits until iface is operationally up and, with ipv6, has a
// link-local address. The kernel finishes bringing a veth end up in the
// background, when its link watcher runs: until then the end drops what it
// sends and has no IPv6 link-local address, which a router needs to
// solicit neighbors when it forwards IPv6.
func (n *Netns) waitReady(iface string, ipv6 bool) error {
	return n.Do(func() error {
		deadline := time.Now().Add(linkReadyTimeout)
		for {
			ready, err := interfaceReady(iface, ipv6)
			if err != nil || ready {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("testenv: interface %s in network namespace %s is not up after %v", iface, n.Name, linkReadyTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// interfaceReady reports whether iface is operationally up and, with ipv6,
// has a link-local address, in the calling thread's network namespace.
func interfaceReady(iface string, ipv6 bool) (bool, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return false, err
	}
	if ifc.Flags&net.FlagRunning == 0 {
		return false, nil
	}
	if !ipv6 {
		return true, nil
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
			return true, nil
		}
	}
	return false, nil
}

// Route adds a route to dst through the gateway via inside the namespace,
// for example so that a client reaches a third namespace through a router
// (see EnableForwarding). Host bits of dst are ignored.
func (n *Netns) Route(t testing.TB, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	ip(t, "-n", n.Name, "route", "add", dst.Masked().String(), "via", via.String())
}

// EnableForwarding makes the namespace route packets between its
// interfaces, over IPv4 and IPv6.
func (n *Netns) EnableForwarding(t testing.TB) {
	t.Helper()
	n.sysctl(t, "net.ipv4.ip_forward", "1")
	n.sysctl(t, "net.ipv6.conf.all.forwarding", "1")
}

// sysctl sets the kernel parameter key (as sysctl names it) inside the
// namespace. Parameters under net. have a value per network namespace, and
// /proc/sys shows the one of the namespace of the thread that opens it.
// Writing the file from Do needs no sysctl command (procps), which minimal
// systems lack.
func (n *Netns) sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0) }); err != nil {
		t.Fatalf("testenv: setting %s=%s in network namespace %s: %v", key, value, n.Name, err)
	}
}

// ip runs the ip command with args and fails the test if it fails.
func ip(t testing.TB, args ...string) {
	t.Helper()
	if _, err := runIP(args...); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// runIP runs the ip command with args and returns its combined output, and
// an error that holds the command and that output if it fails.
func runIP(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
