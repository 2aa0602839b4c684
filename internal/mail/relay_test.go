package mail

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"moat/internal/testenv"
)

func TestPrivateAddrs(t *testing.T) {
	pfx := netip.MustParsePrefix
	loopback := []string{"127.0.0.1:587", "[::1]:587"}
	for _, tc := range []struct {
		name    string
		ifs     []Interface
		addrs   []string // beyond loopback
		bridges []string
	}{
		{name: "no interfaces"},
		{
			name: "a VPS: a public address and a private network",
			ifs: []Interface{
				{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8"), pfx("::1/128")}},
				{Name: "eth0", Up: true, Addrs: []netip.Prefix{pfx("203.0.113.7/24"), pfx("2001:db8::7/64"), pfx("fe80::1/64")}},
				{Name: "eth1", Up: true, Addrs: []netip.Prefix{pfx("10.0.0.5/24"), pfx("fd12:3456::5/64")}},
			},
			addrs: []string{"10.0.0.5:587", "[fd12:3456::5]:587"},
		},
		{
			name: "carrier-grade NAT and a WireGuard network",
			ifs: []Interface{
				{Name: "eth0", Up: true, Addrs: []netip.Prefix{pfx("100.64.3.2/10")}},
				{Name: "wg0", Up: true, Addrs: []netip.Prefix{pfx("192.168.77.1/24")}},
			},
			addrs: []string{"100.64.3.2:587", "192.168.77.1:587"},
		},
		{
			name: "an interface that is down",
			ifs:  []Interface{{Name: "eth1", Addrs: []netip.Prefix{pfx("10.0.0.5/24")}}},
		},
		{
			name: "Docker bridges, one on a public range",
			ifs: []Interface{
				{Name: "docker0", Up: true, Addrs: []netip.Prefix{pfx("172.17.0.1/16")}},
				{Name: "br-4f1e2d3c", Up: true, Addrs: []netip.Prefix{pfx("198.51.100.1/24"), pfx("fe80::42/64")}},
				{Name: "brx", Up: true, Addrs: []netip.Prefix{pfx("198.51.99.1/24")}},
			},
			addrs:   []string{"172.17.0.1:587", "198.51.100.1:587"},
			bridges: []string{"172.17.0.0/16", "198.51.100.0/24"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs, bridges := privateAddrs(tc.ifs, DefaultPort)
			if got, want := strs(addrs), append(slices.Clone(loopback), tc.addrs...); !slices.Equal(got, want) {
				t.Errorf("addresses %v, want %v", got, want)
			}
			if got := strs(bridges); !slices.Equal(got, tc.bridges) {
				t.Errorf("bridges %v, want %v", got, tc.bridges)
			}
		})
	}
}

func strs[T interface{ String() string }](xs []T) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.String())
	}
	return out
}

// TestRelayListensWhereTheServerIs: with mail.listen empty, the relay
// listens on loopback and on the server's private addresses, not on its
// public one; a Docker bridge that appears later is listened on within a
// rescan, and its network's peers are let in; one that goes away is let
// go.
func TestRelayListensWhereTheServerIs(t *testing.T) {
	host, other := testenv.NewNetns(t), testenv.NewNetns(t)
	pfx := netip.MustParsePrefix
	testenv.Link(t, host, []netip.Prefix{pfx("10.63.1.1/24"), pfx("203.0.113.1/24")}, other, []netip.Prefix{pfx("10.63.1.2/24"), pfx("203.0.113.2/24")})
	r := NewRelay(RelayOptions{
		Store: newMemStore(),
		Log:   testLog(t),
		Listen: func(network, addr string) (ln net.Listener, err error) {
			err = host.Do(func() error {
				ln, err = net.Listen(network, addr)
				return err
			})
			return ln, err
		},
		Interfaces: func() (ifs []Interface, err error) {
			err = host.Do(func() error {
				ifs, err = HostInterfaces()
				return err
			})
			return ifs, err
		},
	})
	if err := r.Configure(Settings{Domain: "moat.test", Hourly: 300, MaxSize: 1 << 20, MaxRecipients: 50}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, 50*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	waitAddrs := func(want []string) {
		t.Helper()
		slices.Sort(want)
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := r.Addrs()
			slices.Sort(got)
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the relay listens on %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	greets := func(ns *testenv.Netns, addr string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := ns.Dial(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		return n >= 3 && string(buf[:3]) == "220"
	}
	base := []string{"127.0.0.1:587", "[::1]:587", "10.63.1.1:587"}
	waitAddrs(slices.Clone(base))
	if !greets(other, "10.63.1.1:587") {
		t.Error("a client on the private network is not greeted")
	}
	if greets(other, "203.0.113.1:587") {
		t.Error("the relay answers on the server's public address")
	}

	// A Docker network on a public range: its containers may submit.
	host.Run(t, "ip", "link", "add", "br-0a1b2c3d", "type", "bridge")
	host.Run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "br-0a1b2c3d")
	host.Run(t, "ip", "link", "set", "br-0a1b2c3d", "up")
	waitAddrs(append(slices.Clone(base), "198.51.100.1:587"))
	if !r.peerAllowed(netip.MustParseAddr("198.51.100.9")) {
		t.Error("a container on the Docker network is not let in")
	}
	if r.peerAllowed(netip.MustParseAddr("198.51.101.9")) {
		t.Error("a public address beside the Docker network is let in")
	}

	host.Run(t, "ip", "link", "del", "br-0a1b2c3d")
	waitAddrs(slices.Clone(base))
	if r.peerAllowed(netip.MustParseAddr("198.51.100.9")) {
		t.Error("the removed Docker network's addresses are still let in")
	}
}

// TestRestoreQuota: after a restart, the messages accepted in the last
// hour still count against the app's quota.
func TestRestoreQuota(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st := newMemStore()
	for i, at := range []time.Duration{-90 * time.Minute, -50 * time.Minute, -10 * time.Minute} {
		m := Message{ID: string(rune('a' + i)), App: "gitea", From: "gitea@moat.test", To: []Recipient{{Addr: "a@example.org"}, {Addr: "b@example.org"}}, Accepted: now.Add(at), State: Delivered}
		if err := st.Enqueue(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewRelay(RelayOptions{Store: st, Log: testLog(t), Now: func() time.Time { return now }})
	if err := r.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Four recipients in the hour: a limit of 5 leaves one.
	if _, ok := r.quota.hold("gitea", 5, now); !ok {
		t.Fatal("the fifth recipient is refused")
	}
	wait, ok := r.quota.hold("gitea", 5, now)
	if ok {
		t.Fatal("the sixth recipient is taken: the messages before the restart were not counted")
	}
	if wait != 10*time.Minute {
		t.Errorf("wait %v, want 10m0s (until the message 50 minutes old leaves the hour)", wait)
	}
	if _, ok := r.quota.hold("other", 5, now); !ok {
		t.Error("another app is refused")
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
