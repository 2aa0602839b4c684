package guard

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// authLog is a mix of what an internet-facing sshd logs: mostly
// failures of the kinds SSHD knows, some accepted logins and other noise.
func authLog(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	lines := make([]string, n)
	for i := range lines {
		addr := fmt.Sprintf("%d.%d.%d.%d", 1+r.IntN(223), r.IntN(256), r.IntN(256), 1+r.IntN(254))
		port := 1024 + r.IntN(60000)
		prefix := fmt.Sprintf("Nov 21 07:%02d:%02d vps sshd[%d]: ", r.IntN(60), r.IntN(60), 1000+r.IntN(50000))
		switch r.IntN(10) {
		case 0, 1, 2:
			lines[i] = prefix + fmt.Sprintf("Failed password for invalid user admin%d from %s port %d ssh2", r.IntN(100), addr, port)
		case 3, 4:
			lines[i] = prefix + fmt.Sprintf("Invalid user admin%d from %s port %d", r.IntN(100), addr, port)
		case 5:
			lines[i] = prefix + fmt.Sprintf("Failed password for root from %s port %d ssh2", addr, port)
		case 6:
			lines[i] = prefix + fmt.Sprintf("Connection closed by authenticating user root %s port %d [preauth]", addr, port)
		case 7:
			lines[i] = prefix + fmt.Sprintf("Accepted publickey for alice from %s port %d ssh2: ED25519 SHA256:x", addr, port)
		case 8:
			lines[i] = prefix + fmt.Sprintf("Received disconnect from %s port %d:11: Bye Bye [preauth]", addr, port)
		default:
			lines[i] = fmt.Sprintf("Nov 21 07:00:00 vps CRON[%d]: pam_unix(cron:session): session opened for user root", r.IntN(9999))
		}
	}
	return lines
}

func BenchmarkSSHDFilter(b *testing.B) {
	lines := authLog(10_000)
	var f SSHD
	matched := 0
	i := 0
	for b.Loop() {
		if _, ok := f.Match(lines[i%len(lines)]); ok {
			matched++
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkDetectorMemory reports the live heap the detector holds per
// tracked address, with 1,000,000 distinct addresses at one failure each
// (a wide scan: the detector's worst case), how long an Observe takes,
// and what is left once a sweep has forgotten them.
//
//   - ipv4: one line shared by every attempt, so this is the detector's own
//     structure: what the evidence costs beyond its string header is left
//     out.
//   - ipv4-own-lines: every attempt has its own line, as Tail hands them
//     on, so the lines the detector keeps as evidence count too.
//   - ipv6: one address in each of 1,000,000 /64s (an attacker who owns a
//     /44 and rotates through it), one shared line.
func BenchmarkDetectorMemory(b *testing.B) {
	shared := "Nov 21 07:00:01 vps sshd[1234]: Failed password for root from 203.0.113.7 port 50122 ssh2"
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	v6 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
	}
	for _, bc := range []struct {
		name string
		addr func(i int) netip.Addr
		own  bool
	}{
		{"ipv4", v4, false},
		{"ipv4-own-lines", v4, true},
		{"ipv6", v6, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				d := NewDetector("sshd", DefaultPolicy(), nil)
				now := time.Unix(1_800_000_000, 0)
				start := time.Now()
				for i := range 1_000_000 {
					a := bc.addr(i)
					line := shared
					if bc.own {
						line = fmt.Sprintf("Nov 21 07:00:01 vps sshd[%d]: Failed password for root from %s port %d ssh2", 1000+i%50000, a, uint16(i))
					}
					d.Observe(Attempt{Addr: a, Port: uint16(i)}, line, now)
				}
				elapsed := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if d.Tracked() != 1_000_000 {
					b.Fatal(d.Tracked())
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "bytes/address")
				b.ReportMetric(float64(elapsed.Nanoseconds())/1e6, "ns/observe")
				// Once the scan is out of the window, a sweep forgets
				// it: what stays is what the maps keep of their peak.
				d.Sweep(now.Add(DefaultPolicy().FindTime))
				runtime.GC()
				runtime.ReadMemStats(&after)
				if d.Tracked() != 0 {
					b.Fatal(d.Tracked())
				}
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/1e6, "swept-bytes/address")
				runtime.KeepAlive(d)
			}
		})
	}
}
