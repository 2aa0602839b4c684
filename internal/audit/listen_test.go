package audit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// TestMain doubles as a listener for TestSockets: with MOAT_AUDIT_LISTEN
// set, the test binary (copied under a service's name) opens those
// sockets, says ready, and holds them until its standard input closes.
func TestMain(m *testing.M) {
	if spec := os.Getenv("MOAT_AUDIT_LISTEN"); spec != "" {
		var keep []io.Closer
		for _, s := range strings.Fields(spec) {
			network, addr, _ := strings.Cut(s, "=")
			var c io.Closer
			var err error
			switch {
			case strings.HasPrefix(network, "tcp"):
				c, err = net.Listen(network, addr)
			case network == "udp-client":
				c, err = net.Dial("udp4", addr)
			default:
				c, err = net.ListenPacket(network, addr)
			}
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			keep = append(keep, c)
		}
		// A TCP connection that is not a listener, to its own first one.
		if l, ok := keep[0].(net.Listener); ok {
			if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
				keep = append(keep, c)
			}
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		for _, c := range keep {
			c.Close()
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// listenAs runs the test binary, named name, in ns, holding sockets.
func listenAs(t *testing.T, ns *testenv.Netns, name string, sockets ...string) int {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, bin)
	cmd.Env = append(os.Environ(), "MOAT_AUDIT_LISTEN="+strings.Join(sockets, " "))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("%s: %q", name, line)
	}
	return cmd.Process.Pid
}

// TestSockets: the sockets that processes open in a namespace (TCP and
// UDP, IPv4 and IPv6, on loopback, private, public and every address)
// are each found with its scope and the process that holds it; client
// sockets are not listeners.
func TestSockets(t *testing.T) {
	ns := testenv.NewNetns(t)
	// A veth pair inside the namespace carries its addresses (this
	// kernel may have no dummy interfaces).
	ns.Run(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.Run(t, "ip", "link", "set", "d1", "up")
	for _, a := range []string{"10.9.0.1/24", "203.0.113.5/24"} {
		ns.Run(t, "ip", "addr", "add", a, "dev", "d0")
	}
	for _, a := range []string{"fd00::1/64", "2001:db8::1/64"} {
		ns.Run(t, "ip", "addr", "add", a, "dev", "d0", "nodad")
	}
	ns.Run(t, "ip", "link", "set", "d0", "up")
	pg := listenAs(t, ns, "postgres",
		"tcp4=0.0.0.0:5432", "tcp4=127.0.0.1:5433", "tcp4=10.9.0.1:5434", "tcp4=203.0.113.5:5435",
		"tcp6=[::1]:5436", "tcp6=[fd00::1]:5437", "tcp6=[2001:db8::1]:5438", "tcp6=[::]:5439",
		"udp4=0.0.0.0:5353", "udp6=[::1]:5354", "udp-client=10.9.0.1:9")
	redis := listenAs(t, ns, "redis-server", "tcp4=0.0.0.0:6379")

	got, err := Sockets("/proc", strconv.Itoa(pg))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		listen string
		proto  string
		scope  Scope
		pid    int
		name   string
	}{
		{"0.0.0.0:5353", "udp", Wildcard, pg, "postgres"},
		{"[::1]:5354", "udp", Loopback, pg, "postgres"},
		{"0.0.0.0:5432", "tcp", Wildcard, pg, "postgres"},
		{"127.0.0.1:5433", "tcp", Loopback, pg, "postgres"},
		{"10.9.0.1:5434", "tcp", Private, pg, "postgres"},
		{"203.0.113.5:5435", "tcp", Public, pg, "postgres"},
		{"[::1]:5436", "tcp", Loopback, pg, "postgres"},
		{"[fd00::1]:5437", "tcp", Private, pg, "postgres"},
		{"[2001:db8::1]:5438", "tcp", Public, pg, "postgres"},
		{"[::]:5439", "tcp", Wildcard, pg, "postgres"},
		{"0.0.0.0:6379", "tcp", Wildcard, redis, "redis-server"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d listeners, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Addr != netip.MustParseAddrPort(w.listen) || g.Proto != w.proto || g.Scope != w.scope || g.PID != w.pid || g.Process != w.name {
			t.Errorf("listener %d: %+v, want %+v", i, g, w)
		}
	}

	// With no firewall, the open ones are findings, named by process.
	r := Run(Host{Listeners: got}, testNow)
	var exposed []string
	for _, f := range r.Findings {
		if f.Check == "listen.exposed" {
			exposed = append(exposed, f.Subject)
		}
	}
	wantExposed := []string{"0.0.0.0:5353/udp", "0.0.0.0:5432/tcp", "203.0.113.5:5435/tcp", "[2001:db8::1]:5438/tcp", "[::]:5439/tcp", "0.0.0.0:6379/tcp"}
	if strings.Join(exposed, " ") != strings.Join(wantExposed, " ") {
		t.Errorf("exposed: %v, want %v", exposed, wantExposed)
	}
}
