package firewall

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"moat/internal/testenv"
)

// lab is a small network made of namespaces: host runs moat's nftables;
// two clients reach it over veth pairs (IPv4 and IPv6); svc sits behind
// host, reached through a DNAT as Docker's containers are.
type lab struct {
	host, c1, c2, svc *testenv.Netns
	m                 *Manager
}

const (
	hostC1  = "10.61.1.1"
	c1Addr  = "10.61.1.2"
	hostC2  = "198.51.100.1" // client 2 is on the internet side: not a private address
	c2Addr  = "198.51.100.2"
	hostSvc = "10.61.3.1"
	svcAddr = "10.61.3.2"
	hostC16 = "fd61:1::1"
	c1Addr6 = "fd61:1::2"
)

func newLab(t *testing.T) *lab {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("firewall: these tests need nft (Debian package nftables); make test installs it")
	}
	l := &lab{host: testenv.NewNetns(t), c1: testenv.NewNetns(t), c2: testenv.NewNetns(t), svc: testenv.NewNetns(t)}
	pfx := netip.MustParsePrefix
	testenv.Link(t, l.host, []netip.Prefix{pfx(hostC1 + "/24"), pfx(hostC16 + "/64")}, l.c1, []netip.Prefix{pfx(c1Addr + "/24"), pfx(c1Addr6 + "/64")})
	testenv.Link(t, l.host, []netip.Prefix{pfx(hostC2 + "/24")}, l.c2, []netip.Prefix{pfx(c2Addr + "/24")})
	testenv.Link(t, l.host, []netip.Prefix{pfx(hostSvc + "/24")}, l.svc, []netip.Prefix{pfx(svcAddr + "/24")})
	l.host.EnableForwarding(t)
	l.svc.Route(t, pfx("0.0.0.0/0"), netip.MustParseAddr(hostSvc))
	l.m = NewManager(NFT{Netns: l.host.Name})
	return l
}

// serve listens on port in ns on every address, answering each
// connection with one byte.
func serve(t *testing.T, ns *testenv.Netns, port string) {
	t.Helper()
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "0.0.0.0:" + port
		if network == "tcp6" {
			addr = "[::]:" + port
		}
		ln := ns.Listen(t, network, addr)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte{'!'})
				c.Close()
			}
		}()
	}
}

// reach reports whether a TCP connection from ns to addr gets its byte
// within a short time (a dropped SYN times out).
func reach(t *testing.T, ns *testenv.Netns, addr string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 1)
	_, err = c.Read(b)
	return err == nil && b[0] == '!'
}

// expect checks what each client reaches.
func (l *lab) expect(t *testing.T, when string, want map[string]bool) {
	t.Helper()
	for key, ok := range want {
		who, addr, _ := strings.Cut(key, " ")
		ns := map[string]*testenv.Netns{"c1": l.c1, "c2": l.c2}[who]
		got := reach(t, ns, addr)
		// A path that opens again may take a moment: after a ban, the
		// neighbour discovery that the ban dropped is retried.
		for deadline := time.Now().Add(5 * time.Second); ok && !got && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			got = reach(t, ns, addr)
		}
		if got != ok {
			t.Errorf("%s: %s reaching %s: %v, want %v", when, who, addr, got, ok)
		}
	}
}

func mustRules(t testing.TB, specs ...string) []Rule {
	t.Helper()
	var rules []Rule
	for _, s := range specs {
		ports, from, _ := strings.Cut(s, " from ")
		proto, f, to, err := ParsePorts(ports)
		if err != nil {
			t.Fatal(err)
		}
		r := Rule{Proto: proto, From: f, To: to}
		if from != "" {
			for _, src := range strings.Split(from, ",") {
				p, err := ParseSource(src)
				if err != nil {
					t.Fatal(err)
				}
				r.Sources = append(r.Sources, p)
			}
		}
		rules = append(rules, r)
	}
	return rules
}

func TestOnlyAllowedPortsConnect(t *testing.T) {
	l := newLab(t)
	for _, p := range []string{"22", "80", "5432"} {
		serve(t, l.host, p)
	}
	ctx := context.Background()
	l.expect(t, "before moat", map[string]bool{"c1 " + hostC1 + ":5432": true})

	if err := l.m.Apply(ctx, mustRules(t, "22/tcp", "80/tcp")); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "22 and 80 open", map[string]bool{
		"c1 " + hostC1 + ":22": true, "c1 " + hostC1 + ":80": true, "c1 " + hostC1 + ":5432": false,
		"c2 " + hostC2 + ":22": true, "c2 " + hostC2 + ":5432": false,
		"c1 [" + hostC16 + "]:22": true, "c1 [" + hostC16 + "]:5432": false,
	})

	if err := l.m.Apply(ctx, mustRules(t, "22/tcp", "80/tcp", "5432/tcp from "+c1Addr+"/32,"+c1Addr6)); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "5432 open to client 1", map[string]bool{
		"c1 " + hostC1 + ":5432": true, "c2 " + hostC2 + ":5432": false,
		"c1 [" + hostC16 + "]:5432": true,
	})
}

// dockerBackends publish svc:5432 as host:5433 the ways Docker does,
// with a DNAT in the nat table and an accept in the forward path: Docker
// 29's own nftables tables, iptables-nft and iptables-legacy. remove is
// what a Docker restart does first.
var dockerBackends = []struct {
	name, tool      string
	publish, remove [][]string
}{
	{"nftables", "nft",
		[][]string{{"nft", "add table ip dockerish { chain prerouting { type nat hook prerouting priority dstnat; policy accept; tcp dport 5433 dnat to " + svcAddr + ":5432; }; chain forward { type filter hook forward priority filter; policy accept; ip daddr " + svcAddr + " tcp dport 5432 accept; }; }"}},
		[][]string{{"nft", "delete", "table", "ip", "dockerish"}}},
	{"iptables-nft", "iptables-nft",
		[][]string{
			{"iptables-nft", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "5433", "-j", "DNAT", "--to-destination", svcAddr + ":5432"},
			{"iptables-nft", "-A", "FORWARD", "-d", svcAddr, "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"},
		},
		[][]string{{"iptables-nft", "-t", "nat", "-F"}, {"iptables-nft", "-F", "FORWARD"}}},
	{"iptables-legacy", "iptables-legacy",
		[][]string{
			{"iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "5433", "-j", "DNAT", "--to-destination", svcAddr + ":5432"},
			{"iptables-legacy", "-A", "FORWARD", "-d", svcAddr, "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"},
		},
		[][]string{{"iptables-legacy", "-t", "nat", "-F"}, {"iptables-legacy", "-F", "FORWARD"}}},
}

func TestPublishedPortObeysTheRules(t *testing.T) {
	for _, backend := range dockerBackends {
		t.Run(backend.name, func(t *testing.T) {
			if _, err := exec.LookPath(backend.tool); err != nil {
				t.Skipf("firewall: this case needs %s (Debian package iptables); make test installs it", backend.tool)
			}
			l := newLab(t)
			serve(t, l.svc, "5432")
			run := func(cmds [][]string) {
				for _, c := range cmds {
					if c[0] == "nft" && len(c) == 2 {
						l.host.Run(t, "nft", c[1])
						continue
					}
					l.host.Run(t, c...)
				}
			}
			run(backend.publish)
			published := "c1 " + hostC1 + ":5433"
			l.expect(t, "before moat", map[string]bool{published: true})

			ctx := context.Background()
			if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
				t.Fatal(err)
			}
			l.expect(t, "5433 not allowed", map[string]bool{published: false})

			if err := l.m.Apply(ctx, mustRules(t, "22/tcp", "5433/tcp from "+c1Addr)); err != nil {
				t.Fatal(err)
			}
			l.expect(t, "5433 allowed to client 1", map[string]bool{published: true})

			// Docker restarting: its rules deleted and written again.
			if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
				t.Fatal(err)
			}
			run(backend.remove)
			run(backend.publish)
			l.expect(t, "after Docker rewrote its rules", map[string]bool{published: false})
		})
	}
}

// TestInternalPorts: an app's internal port is open to private networks
// (client 1) and not to the internet (client 2).
func TestInternalPorts(t *testing.T) {
	l := newLab(t)
	serve(t, l.host, "6379")
	rules := append(mustRules(t, "22/tcp"), Rule{Proto: "tcp", From: 6379, To: 6379, Sources: PrivateNetworks(), App: "cache", Comment: "internal"})
	if err := l.m.Apply(context.Background(), rules); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "internal port", map[string]bool{
		"c1 " + hostC1 + ":6379": true, "c1 [" + hostC16 + "]:6379": true, "c2 " + hostC2 + ":6379": false,
	})
}

func TestBans(t *testing.T) {
	l := newLab(t)
	serve(t, l.host, "22")
	ctx := context.Background()
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
		t.Fatal(err)
	}
	// A ban of the same prefix again replaces the element and its
	// timeout, whatever the kernel does with a re-added element.
	for _, d := range []time.Duration{time.Hour, 0, 2 * time.Second} {
		if err := l.m.Ban(ctx, netip.MustParsePrefix(c1Addr+"/32"), d); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.m.Ban(ctx, netip.MustParsePrefix(c1Addr6+"/128"), time.Hour); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "client 1 banned", map[string]bool{
		"c1 " + hostC1 + ":22": false, "c2 " + hostC2 + ":22": true, "c1 [" + hostC16 + "]:22": false,
	})
	bans, err := l.m.Bans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 2 || bans[0].Prefix.String() != c1Addr+"/32" || bans[0].Expires <= 0 || bans[0].Expires > 2*time.Second {
		t.Errorf("bans %v, want %s with under 2 s left and the IPv6 one", bans, c1Addr)
	}
	// A new ruleset keeps the bans.
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp", "80/tcp")); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "after a new ruleset", map[string]bool{"c1 " + hostC1 + ":22": false})
	time.Sleep(2500 * time.Millisecond)
	l.expect(t, "after the IPv4 ban expired", map[string]bool{
		"c1 " + hostC1 + ":22": true, "c1 [" + hostC16 + "]:22": false,
	})
	if err := l.m.Unban(ctx, netip.MustParsePrefix(c1Addr6+"/128")); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "after the unban", map[string]bool{"c1 [" + hostC16 + "]:22": true})
}

func TestOtherTablesUntouched(t *testing.T) {
	l := newLab(t)
	serve(t, l.host, "5432")
	nft := NFT{Netns: l.host.Name}
	ctx := context.Background()
	other := "table inet other {\n\tset friends {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1, 192.0.2.2 }\n\t}\n\n\tchain in {\n\t\ttype filter hook input priority filter + 5; policy accept;\n\t\ttcp dport 9 ip saddr @friends accept\n\t}\n}\n"
	if _, err := nft.run(ctx, other, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	list := func() string {
		out, err := nft.run(ctx, "", "list", "table", "inet", "other")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := list()
	steps := []struct {
		name string
		do   func() error
	}{
		{"apply", func() error { return l.m.Apply(ctx, mustRules(t, "22/tcp")) }},
		{"off", func() error { return l.m.Off(ctx) }},
		{"on", func() error { return l.m.Apply(ctx, mustRules(t, "22/tcp")) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if after := list(); after != before {
			t.Errorf("after %s the other table changed:\n%s\nwas:\n%s", s.name, after, before)
		}
	}
	// The other table's owner deletes and recreates it: moat's rules stay.
	if _, err := nft.run(ctx, "", "delete", "table", "inet", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := nft.run(ctx, other, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "after the other table was recreated", map[string]bool{"c1 " + hostC1 + ":5432": false})
}

func TestConfirmOrRollBack(t *testing.T) {
	l := newLab(t)
	serve(t, l.host, "22")
	serve(t, l.host, "5432")
	ctx := context.Background()
	before := mustRules(t, "22/tcp", "5432/tcp")
	if err := l.m.Apply(ctx, before); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	if err := l.m.ApplyConfirm(ctx, mustRules(t, "80/tcp"), before, true, time.Second, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "the unconfirmed change", map[string]bool{"c1 " + hostC1 + ":22": false, "c1 " + hostC1 + ":5432": false})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("rollback: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no rollback 10 s after a 1 s window")
	}
	l.expect(t, "after the rollback", map[string]bool{"c1 " + hostC1 + ":22": true, "c1 " + hostC1 + ":5432": true})
	if err := l.m.Confirm(); err != ErrNothingToConfirm {
		t.Errorf("Confirm after the rollback: %v, want ErrNothingToConfirm", err)
	}

	// Confirmed in time, the change stays.
	if err := l.m.ApplyConfirm(ctx, mustRules(t, "22/tcp"), before, true, time.Second, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := l.m.Confirm(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	l.expect(t, "after the window of a confirmed change", map[string]bool{"c1 " + hostC1 + ":22": true, "c1 " + hostC1 + ":5432": false})

	// No table before: the rollback removes moat's.
	if err := l.m.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.m.ApplyConfirm(ctx, mustRules(t, "80/tcp"), nil, false, 500*time.Millisecond, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	l.expect(t, "unconfirmed, from no table", map[string]bool{"c1 " + hostC1 + ":22": false})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l.expect(t, "rolled back to no table", map[string]bool{"c1 " + hostC1 + ":22": true, "c1 " + hostC1 + ":5432": true})
}

// TestConfirmWindowEdges: an Apply during the window supersedes it; a
// rollback to no rules removes the table instead of dropping everything.
func TestConfirmWindowEdges(t *testing.T) {
	l := newLab(t)
	serve(t, l.host, "22")
	serve(t, l.host, "80")
	ctx := context.Background()
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
		t.Fatal(err)
	}
	rolled := make(chan error, 1)
	if err := l.m.ApplyConfirm(ctx, mustRules(t, "80/tcp"), mustRules(t, "22/tcp"), true, 500*time.Millisecond, func(err error) { rolled <- err }); err != nil {
		t.Fatal(err)
	}
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp", "80/tcp")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	select {
	case err := <-rolled:
		t.Errorf("rolled back after a later Apply (%v)", err)
	default:
	}
	l.expect(t, "after the window of a superseded change", map[string]bool{"c1 " + hostC1 + ":80": true, "c1 " + hostC1 + ":22": true})

	// Nothing to go back to but an empty ruleset: the table goes instead.
	if err := l.m.ApplyConfirm(ctx, mustRules(t, "80/tcp"), nil, true, 300*time.Millisecond, func(err error) { rolled <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-rolled; err != nil {
		t.Fatal(err)
	}
	if active, err := l.m.Active(ctx); err != nil || active {
		t.Errorf("after rolling back to no rules: table active %v (%v), want removed", active, err)
	}
	l.expect(t, "rolled back to no rules", map[string]bool{"c1 " + hostC1 + ":22": true})
}

// TestDrift: a rule added to moat's table by hand is drift, bans coming
// and going are not, and applying again puts moat's rules back.
func TestDrift(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	known := []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")} // the guard's bans
	if _, ok, _ := l.m.Drift(ctx, known); ok {
		t.Error("drift is known before anything was applied")
	}
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
		t.Fatal(err)
	}
	if d, ok, err := l.m.Drift(ctx, known); err != nil || !ok || len(d) != 0 {
		t.Fatalf("drift right after the apply: %v %v %v", d, ok, err)
	}
	if err := l.m.Ban(ctx, netip.MustParsePrefix("192.0.2.7/32"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if d, _, _ := l.m.Drift(ctx, known); len(d) != 0 {
		t.Errorf("a ban is drift: %v", d)
	}
	l.host.Run(t, "nft", "insert", "rule", "inet", Table, "input", "tcp", "dport", "6666", "accept")
	d, ok, err := l.m.Drift(ctx, known)
	if err != nil || !ok || len(d) != 1 || d[0] != "added: tcp dport 6666 accept" {
		t.Errorf("drift after a rule added by hand: %v %v %v", d, ok, err)
	}
	// An element added to a ban set by hand, not the guard's.
	l.host.Run(t, "nft", "add", "element", "inet", Table, "ban4", "{", "198.51.100.99", "}")
	if d, _, _ := l.m.Drift(ctx, known); len(d) != 2 || !strings.Contains(d[1], "198.51.100.99/32 in the ban set") {
		t.Errorf("drift after a ban set element added by hand: %v", d)
	}
	if err := l.m.Apply(ctx, mustRules(t, "22/tcp")); err != nil {
		t.Fatal(err)
	}
	// Applying again puts the rules back; bans stay, as they do at every
	// apply, and unbanning takes the stray element out.
	if d, _, _ := l.m.Drift(ctx, known); len(d) != 1 || !strings.Contains(d[0], "198.51.100.99/32") {
		t.Errorf("drift after applying again: %v", d)
	}
	if err := l.m.Unban(ctx, netip.MustParsePrefix("198.51.100.99/32")); err != nil {
		t.Fatal(err)
	}
	if d, _, _ := l.m.Drift(ctx, known); len(d) != 0 {
		t.Errorf("drift after the unban: %v", d)
	}
	l.host.Run(t, "nft", "delete", "table", "inet", Table)
	if d, _, _ := l.m.Drift(ctx, known); len(d) != 1 || !strings.Contains(d[0], "gone") {
		t.Errorf("drift with the table deleted: %v", d)
	}
}
