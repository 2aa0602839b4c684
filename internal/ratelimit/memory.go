package ratelimit

import (
	"context"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultMaxKeys is how many clients a Memory tracks at most unless
	// told otherwise. Measured at 24-38 bytes per IPv4 client and 35-56
	// per IPv6 /64 (the map's load varies as it grows), a full table
	// takes at most ~80 MB of IPv4 clients or ~120 MB of IPv6 ones.
	DefaultMaxKeys = 1 << 21
	// DefaultSweepEvery is how often Run sweeps idle keys by default.
	DefaultSweepEvery = time.Minute

	// shards is how many locks a Memory spreads its keys over: enough
	// that cores almost never contend, few enough to cost nothing idle.
	shards = 256
	// evictSample is how many keys a full shard looks at to make room.
	evictSample = 8
	// shrinkFloor is the size below which a shard's map is never rebuilt
	// to give memory back; rebuilding small maps would gain nothing.
	shrinkFloor = 512
)

// Memory is the in-process Backend: one int64 per tracked client, in
// sharded maps.
//
// Memory is bounded: a key whose bucket is full again carries no
// information (absent means full), so Sweep deletes it, and Run sweeps
// periodically. Beyond that, each of the 256 shards holds at most
// 1/256th of maxKeys (see NewMemory), so a flood that lands on one shard
// cannot push out the clients of the others.
//
// When a new client arrives at a full shard, the shard looks at a few
// keys from a random place and forgets the idle ones among them, or else the one
// whose bucket is closest to full again. Forgetting a key only ever gives
// that client its full burst back early, never refuses anyone, and the
// keys it picks are the ones that were using the least of their
// allowance, so clients being limited stay limited. The alternatives are
// worse under a flood from many addresses (an IPv6 attacker owns billions
// of them): refusing untracked clients would let him lock every new
// visitor out, and letting them through untracked would switch the limit
// off for him.
type Memory struct {
	// epoch anchors the int64 clock: nanoseconds since epoch, measured
	// on the monotonic clock when now comes from time.Now, so a step of
	// the wall clock neither frees nor locks out anyone.
	epoch     time.Time
	seed      uint64
	shift     uint // 64 - log2(len(shards)): a key's shard is hash >> shift
	shards    []shard
	evictions atomic.Uint64
}

type shard struct {
	mu sync.Mutex
	// Each tracked client's theoretical arrival time, in nanoseconds
	// since the Memory's epoch, in one of three maps by the shape of its
	// key. A Go map's slot is its key and value rounded up to 8 bytes,
	// so packing the common keys small is what keeps a client at most 38
	// bytes (IPv4) or 56 bytes (IPv6 /64) instead of 84.
	v4   table[uint64] // IPv4 clients: scope<<32 | address, 16-byte slots
	net  table[net64]  // IPv6 prefixes of /64 or shorter, 24-byte slots
	rest table[Key]    // longer IPv6 prefixes and the zero Addr, 32-byte slots
	// max is the shard's share of maxKeys.
	max int
	_   [64]byte // pad to 128 bytes: keep neighbouring shards' locks off one cache line pair
}

// len is how many clients the shard tracks.
func (s *shard) len() int { return len(s.v4.tat) + len(s.net.tat) + len(s.rest.tat) }

// table is one map of a shard.
type table[K comparable] struct {
	tat map[K]int64
	// peak is the most keys tat held since it was made; Sweep rebuilds
	// the map when it has shrunk well below, since Go maps never give
	// memory back on delete.
	peak int
}

// NewMemory returns an empty Memory that tracks at most maxKeys clients
// (DefaultMaxKeys when maxKeys <= 0). Call Run, or Sweep now and then, to
// forget idle clients.
func NewMemory(maxKeys int) *Memory {
	return newMemory(maxKeys, shards)
}

// newMemory is NewMemory with n shards, a power of two; tests use one
// shard to make the cap exact.
func newMemory(maxKeys, n int) *Memory {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if n <= 0 || n&(n-1) != 0 {
		panic("ratelimit: shard count must be a power of two")
	}
	m := &Memory{epoch: time.Now(), seed: rand.Uint64(), shift: uint(64 - bits.TrailingZeros(uint(n))), shards: make([]shard, n)}
	for i := range m.shards {
		m.shards[i].v4.tat = make(map[uint64]int64)
		m.shards[i].net.tat = make(map[net64]int64)
		m.shards[i].rest.tat = make(map[Key]int64)
		m.shards[i].max = max(1, (maxKeys+n-1)/n)
	}
	return m
}

func (m *Memory) shard(k Key) *shard {
	return &m.shards[k.hash(m.seed)>>m.shift]
}

// clock is now on the Memory's int64 clock. Callers pass either times
// from time.Now (monotonic) or fake ones (wall only), not a mix: the two
// clocks drift apart by the NTP corrections in between.
func (m *Memory) clock(now time.Time) int64 { return int64(now.Sub(m.epoch)) }

// Allow counts one request from key against rule at time now.
func (m *Memory) Allow(key Key, rule Rule, now time.Time) Decision {
	t := m.clock(now)
	s := m.shard(key)
	s.mu.Lock()
	var d Decision
	var evicted bool
	if a, ok := key.v4(); ok {
		d, evicted = allow(s, &s.v4, a, rule, t)
	} else if n, ok := key.net64(); ok {
		d, evicted = allow(s, &s.net, n, rule, t)
	} else {
		d, evicted = allow(s, &s.rest, key, rule, t)
	}
	s.mu.Unlock()
	if evicted {
		m.evictions.Add(1)
	}
	return d
}

// allow is Allow within shard s, whose lock is held, for a key of table
// tb. It reports whether a live client had to be forgotten to make room.
func allow[K comparable](s *shard, tb *table[K], k K, rule Rule, now int64) (d Decision, evicted bool) {
	tat, found := tb.tat[k]
	tat, d = decide(tat, found, now, rule)
	if !d.Allowed {
		return d, false
	}
	if !found && s.len() >= s.max {
		// Make room in the biggest map: that is where the flood is.
		switch n4, nn, nr := len(s.v4.tat), len(s.net.tat), len(s.rest.tat); {
		case n4 >= nn && n4 >= nr:
			evicted = s.v4.makeRoom(now)
		case nn >= nr:
			evicted = s.net.makeRoom(now)
		default:
			evicted = s.rest.makeRoom(now)
		}
	}
	tb.tat[k] = tat
	tb.peak = max(tb.peak, len(tb.tat))
	return d, evicted
}

// makeRoom deletes the idle keys among a few picked at random (Go starts
// every map iteration at a random place), or, if none is idle, the one
// whose bucket is fullest. It reports whether it had to forget a client
// that was not idle.
func (tb *table[K]) makeRoom(now int64) (evicted bool) {
	var (
		victim K
		oldest int64
		seen   int
		freed  bool
	)
	for k, tat := range tb.tat {
		if tat <= now {
			delete(tb.tat, k)
			freed = true
		} else if seen == 0 || tat < oldest {
			victim, oldest = k, tat
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if freed || len(tb.tat) == 0 {
		return false
	}
	delete(tb.tat, victim)
	return true
}

// sweep deletes the keys idle at now, and rebuilds the map if it is far
// below its peak. It returns how many keys it deleted.
func (tb *table[K]) sweep(now int64) int {
	n := 0
	for k, tat := range tb.tat {
		if tat <= now {
			delete(tb.tat, k)
			n++
		}
	}
	if tb.peak >= shrinkFloor && len(tb.tat) <= tb.peak/4 {
		fresh := make(map[K]int64, len(tb.tat))
		for k, tat := range tb.tat {
			fresh[k] = tat
		}
		tb.tat, tb.peak = fresh, len(fresh)
	}
	return n
}

// Sweep forgets every client whose bucket is full again at now, and
// reports how many it forgot. It locks one shard at a time.
func (m *Memory) Sweep(now time.Time) int {
	t := m.clock(now)
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += s.v4.sweep(t) + s.net.sweep(t) + s.rest.sweep(t)
		s.mu.Unlock()
	}
	return n
}

// Run sweeps every interval (DefaultSweepEvery when every <= 0) until ctx
// is done.
func (m *Memory) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultSweepEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m.Sweep(now)
		}
	}
}

// Len is how many clients are tracked, for metrics and tests.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += s.len()
		s.mu.Unlock()
	}
	return n
}

// Evictions is how many clients were forgotten before their bucket was
// full again because the table was at MaxKeys: a metric worth alerting
// on, since it means the cap is too small or a flood is under way.
func (m *Memory) Evictions() uint64 { return m.evictions.Load() }

var _ Backend = (*Memory)(nil)
