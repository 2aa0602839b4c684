package firewall

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"moat/internal/testenv"
)

// benchLab is a host and one client, for the benchmarks.
func benchLab(b *testing.B) (host, client *testenv.Netns, m *Manager) {
	b.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		b.Skip("firewall: the benchmarks need nft (Debian package nftables)")
	}
	host, client = testenv.NewNetns(b), testenv.NewNetns(b)
	testenv.Link(b, host, []netip.Prefix{netip.MustParsePrefix(hostC1 + "/24")}, client, []netip.Prefix{netip.MustParsePrefix(c1Addr + "/24")})
	return host, client, NewManager(NFT{Netns: host.Name})
}

// manyRules is n rules on distinct ports, every other one for listed
// sources.
func manyRules(n int) []Rule {
	rules := make([]Rule, 0, n)
	for i := range n {
		r := Rule{Proto: "tcp", From: uint16(10000 + i), To: uint16(10000 + i)}
		if i%2 == 1 {
			r.Sources = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 32)}
		}
		rules = append(rules, r)
	}
	return rules
}

// manyBans is n distinct IPv4 /32 bans in 100.64.0.0/10, none of them the
// lab's addresses.
func manyBans(n int) []Ban {
	bans := make([]Ban, 0, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		bans = append(bans, Ban{Prefix: netip.PrefixFrom(a, 32), Expires: time.Hour})
	}
	return bans
}

// BenchmarkApply1000Rules: one transaction replacing moat's table with
// 1,000 rules (the bans in force are carried over; here there are none).
func BenchmarkApply1000Rules(b *testing.B) {
	_, _, m := benchLab(b)
	rules := manyRules(1000)
	ctx := context.Background()
	for b.Loop() {
		if err := m.Apply(ctx, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad100000Bans: 100,000 bans into a fresh table, in one
// transaction.
func BenchmarkLoad100000Bans(b *testing.B) {
	_, _, m := benchLab(b)
	bans := manyBans(100_000)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if err := m.Off(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Apply(ctx, mustRules(b, "22/tcp")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := m.Load(ctx, bans); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnect: new TCP connections from a client to the host through
// moat's ruleset, with no bans and with 100,000 bans loaded (the set
// lookup keeps the cost flat).
func BenchmarkConnect(b *testing.B) {
	for _, n := range []int{0, 100_000} {
		b.Run(map[int]string{0: "bans=0", 100_000: "bans=100000"}[n], func(b *testing.B) {
			host, client, m := benchLab(b)
			ctx := context.Background()
			if err := m.Apply(ctx, mustRules(b, "22/tcp")); err != nil {
				b.Fatal(err)
			}
			if n > 0 {
				if err := m.Load(ctx, manyBans(n)); err != nil {
					b.Fatal(err)
				}
			}
			host.Accepting(b, "tcp4", "0.0.0.0:22")
			for b.Loop() {
				c, err := client.Dial(ctx, "tcp4", hostC1+":22")
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}
