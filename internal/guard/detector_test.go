package guard

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func attempt(addr string, port uint16) Attempt {
	return Attempt{Addr: netip.MustParseAddr(addr), Port: port, Kind: "password"}
}

func TestDetectorBansAfterMaxRetry(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	for i := range 4 {
		if _, ban := d.Observe(attempt("203.0.113.7", uint16(1000+i)), "line", now.Add(time.Duration(i)*time.Minute)); ban {
			t.Fatalf("banned after %d attempts", i+1)
		}
	}
	dec, ban := d.Observe(attempt("203.0.113.7", 2000), "the fifth", now.Add(9*time.Minute))
	if !ban || dec.Prefix.String() != "203.0.113.7/32" || dec.Duration != 10*time.Minute || dec.Failures != 5 || dec.Jail != "sshd" || dec.Evidence[4] != "the fifth" {
		t.Fatalf("fifth attempt in 10 minutes: %+v %v", dec, ban)
	}
}

func TestDetectorWindowSlides(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	// One attempt every 3 minutes: never 5 within 10 minutes.
	for i := range 20 {
		if _, ban := d.Observe(attempt("203.0.113.7", uint16(1000+i)), "", now.Add(time.Duration(3*i)*time.Minute)); ban {
			t.Fatalf("banned at attempt %d, spaced 3 minutes apart", i+1)
		}
	}
}

func TestDetectorCountsAConnectionOnce(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	// OpenSSH: "Invalid user" and "Failed password for invalid user" for
	// one attempt, same address and port. Four connections, two lines each.
	for i := range 4 {
		for range 2 {
			if _, ban := d.Observe(attempt("203.0.113.7", uint16(1000+i)), "", now); ban {
				t.Fatalf("banned after %d connections: lines were counted, not attempts", i+1)
			}
		}
	}
	if _, ban := d.Observe(attempt("203.0.113.7", 1004), "", now); !ban {
		t.Error("no ban at the fifth connection")
	}
}

func TestDetectorNeverBansIgnoredOrLoopback(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")})
	now := time.Unix(1_800_000_000, 0)
	for _, addr := range []string{"127.0.0.1", "::1", "198.51.100.9", "::ffff:127.0.0.1", "::ffff:198.51.100.9"} {
		for i := range 50 {
			if _, ban := d.Observe(attempt(addr, uint16(i+1)), "", now); ban {
				t.Fatalf("banned %s", addr)
			}
		}
	}
	if d.Tracked() != 0 {
		t.Errorf("tracking %d ignored addresses", d.Tracked())
	}
}

func TestDetectorIPv6Per64(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	var dec Decision
	var ban bool
	for i := range 5 {
		// Five addresses of one /64: one attacker.
		dec, ban = d.Observe(attempt("2001:db8:1:2::"+string(rune('a'+i)), 1), "", now)
	}
	if !ban || dec.Prefix.String() != "2001:db8:1:2::/64" {
		t.Errorf("five addresses in one /64: %+v %v", dec, ban)
	}
	if _, ban := d.Observe(attempt("2001:db8:1:3::1", 1), "", now); ban {
		t.Error("another /64 was banned")
	}
}

func TestDetectorRepeatOffendersDouble(t *testing.T) {
	p := DefaultPolicy()
	p.MaxBanTime = 50 * time.Minute
	d := NewDetector("sshd", p, nil)
	now := time.Unix(1_800_000_000, 0)
	port := uint16(0)
	for _, want := range []time.Duration{10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 50 * time.Minute, 50 * time.Minute} {
		var dec Decision
		var ban bool
		for range 5 {
			port++
			dec, ban = d.Observe(attempt("203.0.113.7", port), "", now)
		}
		if !ban || dec.Duration != want {
			t.Fatalf("ban %d: %v %v, want %v", dec.Repeat+1, dec.Duration, ban, want)
		}
		now = now.Add(30 * time.Minute)
		d.Sweep(now) // the history stays for MaxBanTime after the last ban
	}
	// After MaxBanTime without a ban, the count starts over.
	d.Sweep(now.Add(2 * time.Hour))
	var dec Decision
	for range 5 {
		port++
		dec, _ = d.Observe(attempt("203.0.113.7", port), "", now.Add(2*time.Hour))
	}
	if dec.Duration != 10*time.Minute {
		t.Errorf("after a quiet spell: %v, want 10m again", dec.Duration)
	}
}

func TestDetectorSweep(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	d.Observe(attempt("203.0.113.7", 1), "", now)
	d.Observe(attempt("203.0.113.8", 1), "", now.Add(9*time.Minute))
	d.Sweep(now.Add(11 * time.Minute))
	if n := d.Tracked(); n != 1 {
		t.Errorf("tracking %d after the sweep, want 1 (the recent one)", n)
	}
}

func TestDetectorCountsAConnectionOnceAfterItsBan(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	for i := range 5 {
		d.Observe(attempt("203.0.113.7", uint16(1000+i)), "", now)
	}
	// The fifth connection's "Disconnecting ...: Too many authentication
	// failures" comes after its ban: it is the same attempt, not the first
	// of the next ban.
	d.Observe(attempt("203.0.113.7", 1004), "", now)
	var dec Decision
	for i := range 5 {
		dec, _ = d.Observe(attempt("203.0.113.7", uint16(2000+i)), "", now.Add(time.Minute))
	}
	if dec.Failures != 5 || dec.Repeat != 1 {
		t.Errorf("second ban: %d failures, repeat %d; want 5 failures, repeat 1", dec.Failures, dec.Repeat)
	}
}

func TestDetectorEvidence(t *testing.T) {
	p := DefaultPolicy()
	p.MaxRetry = 3
	d := NewDetector("sshd", p, nil)
	now := time.Unix(1_800_000_000, 0)
	long := strings.Repeat("x", 1000)
	d.Observe(attempt("203.0.113.7", 1), "out of the window", now)
	d.Observe(attempt("203.0.113.7", 2), "first", now.Add(8*time.Minute))
	d.Observe(attempt("203.0.113.7", 3), long, now.Add(11*time.Minute))
	dec, ban := d.Observe(attempt("203.0.113.7", 4), "third", now.Add(12*time.Minute))
	if !ban || !slices.Equal(dec.Evidence, []string{"first", long[:200], "third"}) {
		t.Errorf("evidence %q (ban %v), want the three lines within the window, the long one cut to 200 bytes", dec.Evidence, ban)
	}
}

func TestDetectorBansAtOnceWithMaxRetry1(t *testing.T) {
	p := DefaultPolicy()
	p.MaxRetry = 1
	d := NewDetector("sshd", p, nil)
	now := time.Unix(1_800_000_000, 0)
	for i, want := range []time.Duration{10 * time.Minute, 20 * time.Minute} {
		dec, ban := d.Observe(attempt("2001:db8::1", uint16(i+1)), "the line", now)
		if !ban || dec.Duration != want || dec.Failures != 1 || !slices.Equal(dec.Evidence, []string{"the line"}) {
			t.Errorf("attempt %d: %+v %v, want a ban of %v", i+1, dec, ban, want)
		}
	}
}

func TestDetectorForgetsAScan(t *testing.T) {
	d := NewDetector("sshd", DefaultPolicy(), nil)
	now := time.Unix(1_800_000_000, 0)
	for i := range 20_000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		d.Observe(Attempt{Addr: a, Port: 1}, "", now)
	}
	d.Observe(attempt("203.0.113.7", 1), "", now.Add(9*time.Minute))
	// The scan is out of the window: the sweep forgets it, and the maps
	// are made anew for what is left.
	d.Sweep(now.Add(11 * time.Minute))
	if n := d.Tracked(); n != 1 {
		t.Fatalf("tracking %d after the sweep, want 1", n)
	}
	var ban bool
	for i := range 4 {
		_, ban = d.Observe(attempt("203.0.113.7", uint16(2+i)), "", now.Add(11*time.Minute))
	}
	if !ban {
		t.Error("no ban at the fifth attempt after the maps were made anew")
	}
}
