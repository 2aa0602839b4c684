package ratelimit

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// t0 is the fake clock's start; tests move it forward by hand.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func key(s string) Key { return KeyFor(0, netip.MustParseAddr(s), DefaultV6Prefix) }

// step is one request in a scripted scenario.
type step struct {
	at    time.Duration // since t0
	key   string
	n     int // how many requests at that instant; 0 means 1
	allow bool
	// want, when set, is the decision on the last request of the step
	// (and its Allowed replaces allow).
	want *Decision
}

func run(t *testing.T, b Backend, rule Rule, prefix int, steps []step) {
	t.Helper()
	for i, s := range steps {
		n := max(s.n, 1)
		if s.want != nil {
			s.allow = s.want.Allowed
		}
		for j := range n {
			d := b.Allow(KeyFor(0, netip.MustParseAddr(s.key), prefix), rule, t0.Add(s.at))
			if d.Allowed != s.allow {
				t.Fatalf("step %d (%s at %v), request %d of %d: %v, want allowed=%v", i, s.key, s.at, j+1, n, d, s.allow)
			}
			if j == n-1 && s.want != nil && d != *s.want {
				t.Fatalf("step %d (%s at %v): decision %+v, want %+v", i, s.key, s.at, d, *s.want)
			}
		}
	}
}

func TestAllow(t *testing.T) {
	const (
		a   = "203.0.113.7"
		b   = "198.51.100.9"
		v6a = "2001:db8:1:2::1"
		v6b = "2001:db8:1:2:aaaa:bbbb:cccc:dddd" // same /64 as v6a
		v6c = "2001:db8:1:3::1"                  // next /64, same /56
		v6d = "2001:db8:1:100::1"                // another /56
	)
	ms := time.Millisecond
	tests := []struct {
		name   string
		rule   Rule
		prefix int
		steps  []step
	}{
		{
			name: "150 per minute: 150 at once, the 151st refused, one more after 400ms",
			rule: DefaultRule(),
			steps: []step{
				{at: 0, key: a, want: &Decision{Allowed: true, Limit: 150, Remaining: 149, Reset: 400 * ms}},
				{at: 0, key: a, n: 148, allow: true},
				{at: 0, key: a, allow: true, want: &Decision{Allowed: true, Limit: 150, Remaining: 0, Reset: time.Minute}},
				{at: 0, key: a, want: &Decision{Limit: 150, RetryAfter: 400 * ms, Reset: time.Minute}},
				{at: 399 * ms, key: a, want: &Decision{Limit: 150, RetryAfter: ms, Reset: time.Minute - 399*ms}},
				{at: 400 * ms, key: a, want: &Decision{Allowed: true, Limit: 150, Remaining: 0, Reset: time.Minute}},
				{at: 400 * ms, key: a, allow: false},
				{at: 800 * ms, key: a, allow: true},
				// A full minute of quiet refills the whole bucket.
				{at: 800*ms + time.Minute, key: a, n: 150, allow: true},
				{at: 800*ms + time.Minute, key: a, allow: false},
			},
		},
		{
			name: "150 per minute: refused requests do not push the client further out",
			rule: DefaultRule(),
			steps: []step{
				{at: 0, key: a, n: 150, allow: true},
				{at: 100 * ms, key: a, n: 1000, allow: false},
				{at: 400 * ms, key: a, allow: true},
			},
		},
		{
			name: "two IPv4 clients are independent",
			rule: DefaultRule(),
			steps: []step{
				{at: 0, key: a, n: 150, allow: true},
				{at: 0, key: a, allow: false},
				{at: 0, key: b, n: 150, allow: true},
				{at: 0, key: b, allow: false},
			},
		},
		{
			name: "one IPv6 /64 shares a bucket, the next /64 has its own",
			rule: Rule{Requests: 10, Per: time.Minute},
			steps: []step{
				{at: 0, key: v6a, n: 5, allow: true},
				{at: 0, key: v6b, n: 5, allow: true},
				{at: 0, key: v6a, allow: false},
				{at: 0, key: v6b, allow: false},
				{at: 0, key: v6c, n: 10, allow: true},
				{at: 0, key: v6c, allow: false},
			},
		},
		{
			name:   "IPv6 counted per /56",
			rule:   Rule{Requests: 10, Per: time.Minute},
			prefix: 56,
			steps: []step{
				{at: 0, key: v6a, n: 4, allow: true},
				{at: 0, key: v6b, n: 3, allow: true},
				{at: 0, key: v6c, n: 3, allow: true},
				{at: 0, key: v6c, allow: false},
				{at: 0, key: v6d, n: 10, allow: true},
			},
		},
		{
			name: "10 per second, burst 10",
			rule: Rule{Requests: 10, Per: time.Second, Burst: 10},
			steps: []step{
				{at: 0, key: a, n: 10, allow: true},
				{at: 0, key: a, want: &Decision{Limit: 10, RetryAfter: 100 * ms, Reset: time.Second}},
				{at: 100 * ms, key: a, allow: true},
				{at: 150 * ms, key: a, allow: false},
				{at: 200 * ms, key: a, allow: true},
				{at: 1200 * ms, key: a, n: 10, allow: true},
				{at: 1200 * ms, key: a, allow: false},
			},
		},
		{
			name: "burst smaller than the rate: 10 per second, 3 at once",
			rule: Rule{Requests: 10, Per: time.Second, Burst: 3},
			steps: []step{
				{at: 0, key: a, n: 3, allow: true, want: &Decision{Allowed: true, Limit: 3, Remaining: 0, Reset: 300 * ms}},
				{at: 0, key: a, want: &Decision{Limit: 3, RetryAfter: 100 * ms, Reset: 300 * ms}},
				// Sustained, one every 100ms passes.
				{at: 100 * ms, key: a, allow: true},
				{at: 200 * ms, key: a, allow: true},
				{at: 250 * ms, key: a, allow: false},
				{at: 300 * ms, key: a, allow: true},
			},
		},
		{
			name: "burst larger than the rate: 1 per second, 5 at once",
			rule: Rule{Requests: 1, Per: time.Second, Burst: 5},
			steps: []step{
				{at: 0, key: a, n: 5, allow: true},
				{at: 0, key: a, allow: false},
				{at: time.Second, key: a, allow: true},
				{at: time.Second, key: a, allow: false},
			},
		},
		{
			name: "an invalid rule refuses",
			rule: Rule{Requests: 0, Per: time.Minute},
			steps: []step{
				{at: 0, key: a, want: &Decision{}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, NewMemory(0), tt.rule, tt.prefix, tt.steps)
		})
	}
}

func TestDecisionString(t *testing.T) {
	for _, tt := range []struct {
		d    Decision
		want string
	}{
		{Decision{Allowed: true, Limit: 150, Remaining: 149}, "allowed, 149 of 150 left"},
		{Decision{Limit: 150, RetryAfter: 400 * time.Millisecond}, "limited, 0 of 150 left; retry in 400ms"},
		{Decision{}, "limited: invalid rule"},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestScopesAreIndependent(t *testing.T) {
	m := NewMemory(0)
	rule := Rule{Requests: 1, Per: time.Minute}
	addr := netip.MustParseAddr("203.0.113.7")
	if !m.Allow(KeyFor(1, addr, 64), rule, t0).Allowed || !m.Allow(KeyFor(2, addr, 64), rule, t0).Allowed {
		t.Fatal("first request in a scope refused")
	}
	if m.Allow(KeyFor(1, addr, 64), rule, t0).Allowed {
		t.Fatal("second request in scope 1 allowed")
	}
}

func TestRealClock(t *testing.T) {
	m := NewMemory(0)
	k := key("203.0.113.7")
	rule := Rule{Requests: 2, Per: time.Hour}
	now := time.Now()
	for i, want := range []bool{true, true, false} {
		if d := m.Allow(k, rule, now); d.Allowed != want {
			t.Fatalf("request %d: %v", i+1, d)
		}
	}
	// A wall-clock reading of the same instant (no monotonic reading)
	// agrees with the monotonic one.
	if d := m.Allow(k, rule, now.Round(0)); d.Allowed || (d.Reset-time.Hour).Abs() > time.Millisecond {
		t.Fatalf("wall-clock now: %+v", d)
	}
}

func TestSweep(t *testing.T) {
	m := NewMemory(0)
	rule := Rule{Requests: 60, Per: time.Minute} // one a second
	quiet, busy := key("203.0.113.1"), key("203.0.113.2")
	m.Allow(quiet, rule, t0) // full again at t0+1s
	for range 30 {
		m.Allow(busy, rule, t0) // full again at t0+30s
	}
	if n := m.Sweep(t0.Add(500 * time.Millisecond)); n != 0 || m.Len() != 2 {
		t.Fatalf("early sweep removed %d, %d left", n, m.Len())
	}
	if n := m.Sweep(t0.Add(time.Second)); n != 1 || m.Len() != 1 {
		t.Fatalf("sweep at 1s removed %d, %d left; want the quiet key gone", n, m.Len())
	}
	// The busy client is still remembered: it has 30 of 60 left, not 60.
	if d := m.Allow(busy, rule, t0.Add(time.Second)); d.Remaining != 30 {
		t.Fatalf("busy client after sweep: %v", d)
	}
	if n := m.Sweep(t0.Add(time.Minute)); n != 1 || m.Len() != 0 {
		t.Fatalf("sweep at 1m removed %d, %d left", n, m.Len())
	}
}

// TestSweepGivesMemoryBack checks that a shard's map is rebuilt once a
// flood has gone, since Go maps keep their buckets after delete.
func TestSweepGivesMemoryBack(t *testing.T) {
	m := newMemory(0, 1)
	rule := Rule{Requests: 1, Per: time.Second}
	a4 := netip.MustParseAddr("10.0.0.0")
	for i := range 10 * shrinkFloor {
		a6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i), 15: 1}) // 2001:db8:0:i::1
		m.Allow(KeyFor(0, a4, 64), rule, t0)
		m.Allow(KeyFor(0, a6, 64), rule, t0)
		m.Allow(KeyFor(0, a6, 128), rule, t0)
		a4 = a4.Next()
	}
	live := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8:ffff::1")}
	for _, a := range live {
		m.Allow(KeyFor(0, a, 64), rule, t0.Add(time.Second))
		m.Allow(KeyFor(0, a, 128), rule, t0.Add(time.Second))
	}
	if n := m.Sweep(t0.Add(time.Second)); n != 30*shrinkFloor {
		t.Fatalf("swept %d", n)
	}
	s := &m.shards[0]
	// peak is reset only by the rebuild.
	for name, tb := range map[string]struct{ n, peak int }{
		"v4":   {len(s.v4.tat), s.v4.peak},
		"net":  {len(s.net.tat), s.net.peak},
		"rest": {len(s.rest.tat), s.rest.peak},
	} {
		if tb.n != 1 || tb.peak != 1 {
			t.Errorf("after sweep, %s has %d keys, peak %d; want the map rebuilt with 1", name, tb.n, tb.peak)
		}
	}
	if !tracked(m, "203.0.113.7") || !tracked(m, "2001:db8:ffff::1") {
		t.Fatal("a live key did not survive the rebuild")
	}
}

func TestMaxKeys(t *testing.T) {
	m := newMemory(4, 1)
	rule := Rule{Requests: 10, Per: 10 * time.Second} // one a second
	// Clients 1-4 use up 1, 2, 3 and 4 requests: client 1's bucket is the
	// fullest (full again soonest).
	for i := 1; i <= 4; i++ {
		for range i {
			m.Allow(key(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String()), rule, t0)
		}
	}
	// A fifth client is tracked and allowed; client 1 is forgotten.
	if d := m.Allow(key("10.0.0.5"), rule, t0); !d.Allowed {
		t.Fatalf("new client at the cap: %v", d)
	}
	if m.Len() != 4 || m.Evictions() != 1 {
		t.Fatalf("Len %d, Evictions %d; want 4, 1", m.Len(), m.Evictions())
	}
	if tracked(m, "10.0.0.1") {
		t.Fatal("the client with the fullest bucket was kept")
	}
	// Client 4 is still counted: 4 used, 6 left, this is the 5th.
	if d := m.Allow(key("10.0.0.4"), rule, t0); d.Remaining != 5 {
		t.Fatalf("client 4 after the eviction: %v", d)
	}
	// Once the others are idle, a newcomer takes an idle slot and no
	// client still in the middle of its burst is forgotten.
	later := t0.Add(3 * time.Second) // clients 2, 3, 5 full again; 4 not
	if d := m.Allow(key("10.0.0.6"), rule, later); !d.Allowed {
		t.Fatalf("new client at the cap, later: %v", d)
	}
	if m.Evictions() != 1 {
		t.Fatalf("Evictions %d; an idle key should have made room", m.Evictions())
	}
	for _, k := range []string{"10.0.0.4", "10.0.0.6"} {
		if !tracked(m, k) {
			t.Errorf("%s was forgotten", k)
		}
	}
	// The room is made in the biggest map, where the flood is: here the
	// IPv4 one, though the newcomer is IPv6.
	m3 := newMemory(3, 1)
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "2001:db8::1"} {
		m3.Allow(key(a), rule, t0)
	}
	m3.Allow(key("2001:db8:1::1"), rule, t0)
	if m3.Len() != 3 || !tracked(m3, "2001:db8::1") || !tracked(m3, "2001:db8:1::1") {
		t.Fatalf("IPv6 newcomer at the cap: Len %d, first IPv6 client kept %v", m3.Len(), tracked(m3, "2001:db8::1"))
	}
	// Refused requests never add keys.
	m2 := newMemory(1, 1)
	m2.Allow(key("10.0.0.1"), Rule{Requests: 1, Per: time.Minute}, t0)
	if d := m2.Allow(key("10.0.0.1"), Rule{Requests: 1, Per: time.Minute}, t0); d.Allowed || m2.Len() != 1 {
		t.Fatalf("refused: %v, Len %d", d, m2.Len())
	}
}

// TestConcurrentBurst has many goroutines hit one key at one instant:
// exactly the burst passes, no more, no less.
func TestConcurrentBurst(t *testing.T) {
	const (
		goroutines = 64
		each       = 50
		burst      = 150
	)
	m := NewMemory(0)
	k := key("203.0.113.7")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range goroutines {
		wg.Go(func() {
			<-start
			for range each {
				if m.Allow(k, DefaultRule(), t0).Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Fatalf("%d of %d requests allowed, want exactly %d", got, goroutines*each, burst)
	}
}

// TestConcurrentKeys has goroutines share the shards through many keys,
// sweeping at the same time, for the race detector.
func TestConcurrentKeys(t *testing.T) {
	m := NewMemory(1000)
	rule := Rule{Requests: 5, Per: time.Second}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				addr := netip.AddrFrom4([4]byte{10, byte(g), byte(i % 100), 0})
				m.Allow(KeyFor(0, addr, 64), rule, t0.Add(time.Duration(i)*time.Millisecond))
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			m.Sweep(t0.Add(time.Duration(i) * 20 * time.Millisecond))
			m.Len()
		}
	})
	wg.Wait()
	if n := m.Len(); n > 100*8 {
		t.Fatalf("Len %d, more keys than were used", n)
	}
}

// tracked says whether m remembers the client at addr.
func tracked(m *Memory, addr string) bool {
	k := key(addr)
	s := m.shard(k)
	if a, ok := k.v4(); ok {
		_, found := s.v4.tat[a]
		return found
	}
	if n, ok := k.net64(); ok {
		_, found := s.net.tat[n]
		return found
	}
	_, found := s.rest.tat[k]
	return found
}

func TestShardSize(t *testing.T) {
	if s := unsafe.Sizeof(shard{}); s != 128 {
		t.Fatalf("shard is %d bytes; adjust the padding to 128", s)
	}
}

func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		NewMemory(0).Run(ctx, time.Millisecond)
		close(done)
	}()
	cancel()
	<-done
}
