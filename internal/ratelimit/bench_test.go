package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// open is a rule that never refuses within a benchmark: the allowed path,
// which writes the map, is the expensive one.
var open = Rule{Requests: 1 << 30, Per: time.Hour}

func v4(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

// tracking returns a Memory that already tracks n clients other than the
// benchmark's, so that map lookups are of realistic cost.
func tracking(n int, now time.Time) *Memory {
	m := NewMemory(0)
	for i := range n {
		m.Allow(KeyFor(0, v4(0x0c000000+uint32(i)), 64), DefaultRule(), now)
	}
	return m
}

// BenchmarkAllow is the decision for a client already tracked, among
// 100,000 others: the common case under load.
func BenchmarkAllow(b *testing.B) {
	const others = 100_000
	b.Run("allowed", func(b *testing.B) {
		now := time.Now()
		m := tracking(others, now)
		k := key("203.0.113.7")
		var i time.Duration
		for b.Loop() {
			i++
			m.Allow(k, open, now.Add(i))
		}
	})
	b.Run("allowed-ipv6", func(b *testing.B) {
		now := time.Now()
		m := tracking(others, now)
		k := key("2001:db8:1:2::1")
		var i time.Duration
		for b.Loop() {
			i++
			m.Allow(k, open, now.Add(i))
		}
	})
	b.Run("refused", func(b *testing.B) {
		now := time.Now()
		m := tracking(others, now)
		k := key("203.0.113.7")
		for range 150 {
			m.Allow(k, DefaultRule(), now)
		}
		for b.Loop() {
			if m.Allow(k, DefaultRule(), now).Allowed {
				b.Fatal("allowed")
			}
		}
	})
	// Every goroutine its own client: many clients on many cores.
	b.Run("parallel", func(b *testing.B) {
		now := time.Now()
		m := tracking(others, now)
		var g atomic.Uint32
		b.RunParallel(func(pb *testing.PB) {
			k := KeyFor(0, v4(0x0a000000+g.Add(1)), 64)
			var i time.Duration
			for pb.Next() {
				i++
				m.Allow(k, open, now.Add(i))
			}
		})
	})
	// All goroutines one client: a single flooder, one shard's lock.
	b.Run("parallel-one-key", func(b *testing.B) {
		now := time.Now()
		m := tracking(others, now)
		k := key("203.0.113.7")
		b.RunParallel(func(pb *testing.PB) {
			var i time.Duration
			for pb.Next() {
				i++
				m.Allow(k, open, now.Add(i))
			}
		})
	})
}

// BenchmarkAllowNewKeys is the first request of ever new clients, each
// from its own IPv4 address. Past DefaultMaxKeys it includes eviction.
func BenchmarkAllowNewKeys(b *testing.B) {
	m := NewMemory(0)
	now := time.Now()
	var i uint32
	for b.Loop() {
		i++
		m.Allow(KeyFor(0, v4(i), 64), DefaultRule(), now)
	}
}

// BenchmarkMemoryPerKey tracks 1,000,000 distinct clients and reports
// the heap they take, per key: IPv4 addresses, and IPv6 /64s.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 1_000_000
	for _, family := range []string{"ipv4", "ipv6"} {
		b.Run(family, func(b *testing.B) {
			var perKey float64
			for b.Loop() {
				perKey = heapPerKey(keys, family == "ipv6")
			}
			b.ReportMetric(perKey, "bytes/key")
			b.ReportMetric(perKey*keys/(1<<20), "MB/1M-keys")
		})
	}
}

// heapPerKey is the heap that a Memory tracking n distinct clients takes,
// per client.
func heapPerKey(n int, ipv6 bool) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := NewMemory(0)
	now := time.Now()
	for i := range n {
		var addr netip.Addr
		if ipv6 {
			addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(i >> 24), 5: byte(i >> 16), 6: byte(i >> 8), 7: byte(i), 15: 1})
		} else {
			addr = v4(0x0b000000 + uint32(i))
		}
		m.Allow(KeyFor(0, addr, DefaultV6Prefix), DefaultRule(), now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if m.Len() != n {
		panic("keys lost")
	}
	runtime.KeepAlive(m)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

func TestMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("tracks 1,000,000 keys")
	}
	for _, ipv6 := range []bool{false, true} {
		if got := heapPerKey(1_000_000, ipv6); got >= 100 {
			t.Errorf("ipv6 %v: %.1f bytes per tracked key, want under 100", ipv6, got)
		} else {
			t.Logf("ipv6 %v: %.1f bytes per tracked key", ipv6, got)
		}
	}
}

// BenchmarkHandler is the whole step: policy, clock, decision, headers,
// and for a refusal the 429 response.
func BenchmarkHandler(b *testing.B) {
	k := key("203.0.113.7")
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tt := range []struct {
		name string
		rule Rule
	}{
		{"allowed", open},
		{"refused", Rule{Requests: 1, Per: time.Minute}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			policy := func(*http.Request) (Rule, Key, bool) { return tt.rule, k, true }
			h := Middleware(NewMemory(0), policy, next)
			r := httptest.NewRequest("GET", "/", nil)
			w := &discardWriter{h: make(http.Header)}
			h.ServeHTTP(w, r)
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}

func BenchmarkAllowlist(b *testing.B) {
	var entries []netip.Prefix
	for i := range 100 {
		entries = append(entries, netip.PrefixFrom(v4(uint32(i)<<16), 24))
	}
	a := NewAllowlist(entries...)
	addr := netip.MustParseAddr("203.0.113.7")
	for b.Loop() {
		if a.Contains(addr) {
			b.Fatal("contains")
		}
	}
}
