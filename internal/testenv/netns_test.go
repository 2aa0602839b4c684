package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Addresses of a two-namespace link: a is .1, b is .2.
var (
	linkA = []netip.Prefix{netip.MustParsePrefix("10.99.1.1/24"), netip.MustParsePrefix("fd00:99:1::1/64")}
	linkB = []netip.Prefix{netip.MustParsePrefix("10.99.1.2/24"), netip.MustParsePrefix("fd00:99:1::2/64")}
)

func TestNetnsLink(t *testing.T) {
	t.Parallel()
	a, b := NewNetns(t), NewNetns(t)
	aIf, bIf := Link(t, a, linkA, b, linkB)
	if aIf != "veth0" || bIf != "veth0" {
		t.Errorf("Link named the ends %q and %q, want veth0 and veth0", aIf, bIf)
	}
	if out := b.Run(t, "ip", "-br", "addr", "show", "dev", bIf); !strings.Contains(out, "10.99.1.2/24") ||
		!strings.Contains(out, "fd00:99:1::2/64") || !strings.Contains(out, "UP") {
		t.Errorf("in b, ip addr show dev %s = %q, want it up with 10.99.1.2/24 and fd00:99:1::2/64", bIf, out)
	}

	for _, tt := range []struct {
		network  string
		from, to netip.Prefix
	}{
		{"tcp4", linkA[0], linkB[0]},
		{"tcp6", linkA[1], linkB[1]},
	} {
		t.Run(tt.network, func(t *testing.T) {
			ln := b.Listen(t, tt.network, netip.AddrPortFrom(tt.to.Addr(), 0).String())
			checkEcho(t, a, ln, tt.from.Addr())
		})
	}

	t.Run("udp", func(t *testing.T) {
		pc := b.ListenPacket(t, "udp", netip.AddrPortFrom(linkB[1].Addr(), 0).String())
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, err := a.Dial(ctx, "udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		nr, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := from.(*net.UDPAddr).AddrPort().Addr(); string(buf[:nr]) != "ping" || got != linkA[1].Addr() {
			t.Errorf("read %q from %v, want \"ping\" from %v", buf[:nr], got, linkA[1].Addr())
		}
	})

	// Errors name the command and carry its output.
	_, err := a.RunErr("ip", "link", "show", "dev", "nosuchif")
	if err == nil || !strings.Contains(err.Error(), "ip netns exec "+a.Name+" ip link show dev nosuchif") ||
		!strings.Contains(err.Error(), "nosuchif") {
		t.Errorf("RunErr of a failing command: error %v, want the command and its output", err)
	}
}

// checkEcho connects from client to ln, sends bytes and reads them back,
// and checks that the server saw the connection come from wantFrom.
func checkEcho(t *testing.T, client *Netns, ln net.Listener, wantFrom netip.Addr) {
	t.Helper()
	from := make(chan netip.Addr, 1)
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		from <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		_, err = io.Copy(c, c)
		served <- err
	}()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dialing %s from %s: %v", ln.Addr(), client.Name, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "hello from " + client.Name
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Errorf("echo = %q, want %q", got, msg)
	}
	if err := <-served; err != nil {
		t.Errorf("serving the connection: %v", err)
	}
	if got := <-from; got != wantFrom {
		t.Errorf("server saw the connection from %v, want %v", got, wantFrom)
	}
}

func TestNetnsDo(t *testing.T) {
	t.Parallel()
	a, b := NewNetns(t), NewNetns(t)
	aIf, _ := Link(t, a, linkA, b, linkB)

	var inside []string
	if err := a.Do(func() error {
		var err error
		inside, err = ifNames()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"lo", aIf}; !slices.Equal(inside, want) {
		t.Errorf("interfaces inside Do = %q, want %q", inside, want)
	}

	// No thread stays in the namespace: goroutines run after Do see other
	// interfaces, whichever thread they land on.
	for range 10 {
		if err := a.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			names, err := ifNames()
			if err == nil && slices.Equal(names, inside) {
				err = fmt.Errorf("a goroutine after Do sees the namespace's interfaces %q", names)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	errWant := errors.New("from f")
	if err := a.Do(func() error { return errWant }); !errors.Is(err, errWant) {
		t.Errorf("Do returned %v, want f's error %v", err, errWant)
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("Do's panic: recovered %v, want \"boom\"", v)
			}
		}()
		a.Do(func() error { panic("boom") })
	}()
	if err := a.Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Do of a function that calls runtime.Goexit returned nil, want an error")
	}
}

// ifNames returns the sorted names of the network interfaces of the
// calling thread's namespace.
func ifNames() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ifc := range ifs {
		names = append(names, ifc.Name)
	}
	slices.Sort(names)
	return names, nil
}

func TestNetnsRemovedAtEnd(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("test", func(t *testing.T) {
		name = NewNetns(t).Name
		if !slices.Contains(netnsList(t), name) {
			t.Fatalf("ip netns list does not list %s while the test runs", name)
		}
	})
	if name == "" {
		t.Skip("the subtest skipped")
	}
	if slices.Contains(netnsList(t), name) {
		t.Errorf("ip netns list still lists %s after the test", name)
	}
}

func TestNetnsRemovesStale(t *testing.T) {
	t.Parallel()
	NewNetns(t) // Skips unless namespaces can be made.

	const deadPID = 999999
	if err := syscall.Kill(deadPID, 0); err != syscall.ESRCH {
		t.Fatalf("pid %d must not be running for this test (kill: %v)", deadPID, err)
	}
	// The names end in a random tag so that runs of this test in parallel
	// (-count, or other processes) do not meet.
	dead, own, tag := strconv.Itoa(deadPID), strconv.Itoa(os.Getpid()), fmt.Sprintf("%06x", rand.N(1<<24))
	tests := []struct {
		name        string
		wantRemoved bool
	}{
		{"moat-" + dead + "-stale" + tag, true},
		{"moat-1-live" + tag, false},          // pid 1 always runs
		{"moat-" + own + "-own" + tag, false}, // this process
		{"moatx-" + dead + "-other" + tag, false},
		{"moat-x" + dead + "-other" + tag, false},
	}
	for _, tt := range tests {
		if _, err := runIP("netns", "add", tt.name); err != nil {
			// A NewNetns in another test process may remove a stale
			// namespace while ip makes it: this one has nothing to show then.
			if !tt.wantRemoved || slices.Contains(netnsList(t), tt.name) {
				t.Fatal(err)
			}
			t.Logf("another process removed %s as it was made", tt.name)
		}
		t.Cleanup(func() {
			// Another test process may have removed it meanwhile.
			if _, err := runIP("netns", "delete", tt.name); err != nil && slices.Contains(netnsList(t), tt.name) {
				t.Error(err)
			}
		})
	}

	NewNetns(t)

	list := netnsList(t)
	for _, tt := range tests {
		if removed := !slices.Contains(list, tt.name); removed != tt.wantRemoved {
			t.Errorf("after NewNetns, %s removed: %t, want %t", tt.name, removed, tt.wantRemoved)
		}
	}
}

// netnsList returns the names "ip netns list" lists.
func netnsList(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); name != "" {
			names = append(names, name) // Lines may end in " (id: N)".
		}
	}
	return names
}

func TestNetnsRouter(t *testing.T) {
	t.Parallel()
	client, router, server := NewNetns(t), NewNetns(t), NewNetns(t)
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	Link(t, client, []netip.Prefix{p("10.99.1.2/24"), p("fd00:99:1::2/64")},
		router, []netip.Prefix{p("10.99.1.1/24"), p("fd00:99:1::1/64")})
	routerIf, _ := Link(t, router, []netip.Prefix{p("10.99.2.1/24"), p("fd00:99:2::1/64")},
		server, []netip.Prefix{p("10.99.2.2/24"), p("fd00:99:2::2/64")})
	if routerIf != "veth1" {
		t.Errorf("router's second interface is %q, want veth1", routerIf)
	}
	for _, r := range []struct {
		ns  *Netns
		dst netip.Prefix
		via netip.Addr
	}{
		{client, p("10.99.2.77/24"), a("10.99.1.1")}, // host bits are dropped
		{client, p("fd00:99:2::/64"), a("fd00:99:1::1")},
		{server, p("10.99.1.0/24"), a("10.99.2.1")},
		{server, p("fd00:99:1::/64"), a("fd00:99:2::1")},
	} {
		r.ns.Route(t, r.dst, r.via)
	}

	tests := []struct {
		network        string
		client, server netip.Addr
		ln             net.Listener
	}{
		{network: "tcp4", client: a("10.99.1.2"), server: a("10.99.2.2")},
		{network: "tcp6", client: a("fd00:99:1::2"), server: a("fd00:99:2::2")},
	}
	for i := range tests {
		tests[i].ln = server.Listen(t, tests[i].network, netip.AddrPortFrom(tests[i].server, 0).String())
	}

	// The router does not forward yet: the client's packets go nowhere.
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		conn, err := client.Dial(ctx, "tcp", tt.ln.Addr().String())
		cancel()
		if err == nil {
			conn.Close()
			t.Fatalf("%s: client reached %s before the router forwards", tt.network, tt.ln.Addr())
		}
	}

	hostForwarding := readFile(t, "/proc/sys/net/ipv4/ip_forward")
	router.EnableForwarding(t)
	if got := readFile(t, "/proc/sys/net/ipv4/ip_forward"); got != hostForwarding {
		t.Errorf("EnableForwarding changed the host's net.ipv4.ip_forward from %s to %s", hostForwarding, got)
	}
	if got := router.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"); got != "1\n1\n" {
		t.Errorf("after EnableForwarding, the router's ip_forward and IPv6 forwarding are %q, want 1 and 1", got)
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			checkEcho(t, client, tt.ln, tt.client)
		})
	}
}

// readFile returns the contents of path, without surrounding space.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
