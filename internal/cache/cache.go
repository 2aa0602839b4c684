// Package cache is moat's output cache: a short-lived cache with request
// coalescing in front of each app, so that a flood of one URL reaches the
// app once per TTL (3 s by default) instead of once per request.
//
// It stores whole GET answers in memory for seconds, keyed on app, scheme,
// host, path, query and the request headers the answer Varies on.
// Concurrent misses for one key make one upstream request (the leader);
// the others wait for its answer. The leader reads that answer at the
// upstream's speed and is sent it at its own client's, so the others get
// it the moment the upstream is done, however slowly that client reads.
// Anything that might be personal
// (cookies, Authorization, Set-Cookie, Cache-Control private/no-store/
// no-cache) is never stored, and a key whose answer proved uncacheable is
// passed straight through for the TTL (hit-for-pass), so an uncacheable
// URL is never serialised behind a lock.
//
// A request's own Cache-Control (a browser's reload) is ignored: a client
// header must not be a way around the flood protection, and what it gets
// is at most TTL old. A HEAD miss is fetched upstream as a GET and stored,
// as nginx and Varnish do, so that a HEAD flood is absorbed like a GET
// flood. Unsafe methods (POST…) pass through and drop what is stored for
// their URL.
//
// It is not a CDN and not a disk cache: no revalidation, no stale serving,
// no persistence, no purging API. Its job is to absorb bursts, and the
// short TTL is what keeps it safe to turn on by default.
package cache

import (
	"hash/maphash"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBytes is the memory bound New uses when given 0.
const DefaultMaxBytes = 64 << 20

// nShards spreads keys over independently locked maps, so that hits on
// different keys never touch the same lock.
const nShards = 32

// Cache is the memory shared by the handlers of all apps: a bounded set of
// stored answers and hit-for-pass markers, evicted by CLOCK (a hit sets a
// reference bit without taking any lock; an insertion that overflows the
// bound sweeps the ring and drops entries whose bit is clear). Create it
// with New; wrap each app with Handler.
type Cache struct {
	seed   maphash.Seed
	max    int64
	epoch  time.Time // entries keep time as monotonic nanoseconds since it
	shards [nShards]shard

	// mu guards the CLOCK ring and its totals. Lock order: mu, then a
	// shard's lock; never the other way round.
	mu        sync.Mutex
	hand      *entry // next entry the clock looks at; nil when empty
	entries   int
	bytes     int64
	evictions uint64
}

type shard struct {
	mu    sync.RWMutex
	nodes map[uint64]*node // by key hash; collisions chain through node.next
	_     [64]byte         // keep neighbouring shards' locks off one cache line
}

// node holds everything known about one key (scope, scheme, host, path,
// query): its stored variants, a hit-for-pass marker, fetches under way.
// Its fields are guarded by its shard's lock.
type node struct {
	key  string // reqKey.String(), compared on lookup: a hash match is not enough
	hash uint64
	next *node // another node with the same hash

	// vary is the sorted, canonical header names of the latest stored
	// answer's Vary; new fetches are coalesced per value of these.
	vary     []string
	variants []*entry
	pass     *entry // hit-for-pass marker; nil if none
	flights  []*flight
}

// maxVariants bounds the variants of one key, so that a client inventing
// Accept-Encoding values cannot make lookups of that key slow.
const maxVariants = 16

// entry is one stored answer (or a hit-for-pass marker, which has no
// answer). Everything above ref is immutable once the entry is published,
// so a hit reads it after dropping the shard lock.
type entry struct {
	node     *node
	status   int
	header   http.Header // without hop-by-hop fields and Age
	fields   []field     // header as a slice: a hit copies it without a map iteration
	body     []byte
	vary     []string   // Vary names of the answer
	varyVals [][]string // the storing request's values for vary, same order
	etag     string
	lastMod  time.Time
	stored   int64 // clock reading when the fetch started: Age counts from here
	expires  int64 // clock reading from which it is stale
	baseAge  int64 // the Age the answer arrived with, in seconds
	size     int64
	clock    func() int64 // the storing handler's clock, for the sweep

	ref  atomic.Bool // CLOCK reference bit, set by hits
	dead atomic.Bool // detached from its node; set under the shard lock

	prev, next *entry // ring links, guarded by Cache.mu
	linked     bool
}

type field struct {
	name   string
	values []string
}

// entryOverhead approximates the bytes an entry costs beyond its body,
// header and key: the structs, map buckets and slice headers.
const entryOverhead = 256

// flight is one upstream fetch that followers wait for.
type flight struct {
	vary     []string   // the node's vary names when the fetch began
	varyVals [][]string // the leader's values for them
	done     chan struct{}

	// Set before done is closed.
	entry *entry // the stored answer, or nil
	pass  bool   // uncacheable: go upstream at once, no waiting
}

// Stats is a snapshot of the cache's memory use.
type Stats struct {
	// Entries counts stored answers and hit-for-pass markers.
	Entries int
	// Bytes is their estimated size (bodies, headers, keys, overhead),
	// which eviction keeps at or under MaxBytes. Answers being fetched
	// are not counted until stored; each is at most its MaxBody.
	Bytes     int64
	MaxBytes  int64
	Evictions uint64
}

// New returns a cache that holds at most maxBytes of answers for all the
// apps it serves (0 means DefaultMaxBytes). One answer never takes more
// than a quarter of it, so one large page cannot flush everything else.
func New(maxBytes int64) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	c := &Cache{seed: maphash.MakeSeed(), max: maxBytes, epoch: time.Now()}
	for i := range c.shards {
		c.shards[i].nodes = make(map[uint64]*node)
	}
	return c
}

// Stats reports the cache's current size.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: c.entries, Bytes: c.bytes, MaxBytes: c.max, Evictions: c.evictions}
}

func (c *Cache) shardFor(hash uint64) *shard { return &c.shards[hash>>(64-5)] }

// find returns the node for k, or nil. The caller holds s.mu.
func (s *shard) find(hash uint64, k *reqKey) *node {
	for n := s.nodes[hash]; n != nil; n = n.next {
		if k.equal(n.key) {
			return n
		}
	}
	return nil
}

// create adds an empty node for k. The caller holds s.mu for writing.
func (s *shard) create(hash uint64, k *reqKey) *node {
	n := &node{key: k.String(), hash: hash, next: s.nodes[hash]}
	s.nodes[hash] = n
	return n
}

// dropIfEmpty forgets n once nothing refers to it. The caller holds s.mu.
func (s *shard) dropIfEmpty(n *node) {
	if len(n.variants) > 0 || n.pass != nil || len(n.flights) > 0 {
		return
	}
	head := s.nodes[n.hash]
	if head == n {
		if n.next == nil {
			delete(s.nodes, n.hash)
		} else {
			s.nodes[n.hash] = n.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == n {
			p.next = n.next
			return
		}
	}
}

// detach removes e from its node and marks it dead; the caller holds s.mu
// for writing, unlinks e from the ring later (Cache.settle), and drops the
// node if it is left empty (dropIfEmpty).
func (s *shard) detach(e *entry) {
	if e.dead.Load() {
		return
	}
	e.dead.Store(true)
	n := e.node
	if n.pass == e {
		n.pass = nil
	} else if i := indexOf(n.variants, e); i >= 0 {
		n.variants = append(n.variants[:i], n.variants[i+1:]...)
	}
}

func indexOf(es []*entry, e *entry) int {
	for i, x := range es {
		if x == e {
			return i
		}
	}
	return -1
}

// passing reports whether n is marked hit-for-pass at now.
func (n *node) passing(now int64) bool {
	return n.pass != nil && now < n.pass.expires
}

// peek is the fast path of a lookup, under the read lock and without
// allocating: the fresh variant of key k that fits the request header h,
// or whether k is marked hit-for-pass.
func (s *shard) peek(hash uint64, k *reqKey, h http.Header, now int64) (e *entry, pass bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n := s.find(hash, k); n != nil {
		if pass = n.passing(now); !pass {
			e = n.lookup(h, now)
		}
	}
	return e, pass
}

// lookup returns a fresh variant matching the request header, or nil.
func (n *node) lookup(h http.Header, now int64) *entry {
	for i := len(n.variants) - 1; i >= 0; i-- {
		if e := n.variants[i]; now < e.expires && e.matches(h) {
			return e
		}
	}
	return nil
}

// prune detaches n's expired variants and pass marker, appending them to
// gone. The caller holds s.mu for writing.
func (n *node) prune(s *shard, now int64, gone []*entry) []*entry {
	if n.pass != nil && now >= n.pass.expires {
		gone = append(gone, n.pass)
		s.detach(n.pass)
	}
	for i := 0; i < len(n.variants); {
		if e := n.variants[i]; now >= e.expires {
			gone = append(gone, e)
			s.detach(e) // removes it from n.variants
			continue
		}
		i++
	}
	return gone
}

// findFlight returns the fetch under way that would answer a request with
// header h, or nil.
func (n *node) findFlight(h http.Header) *flight {
	for _, f := range n.flights {
		if valuesMatch(f.vary, f.varyVals, h) {
			return f
		}
	}
	return nil
}

func (n *node) startFlight(h http.Header) *flight {
	f := &flight{vary: n.vary, varyVals: varyValues(n.vary, h, false), done: make(chan struct{})}
	n.flights = append(n.flights, f)
	return f
}

func (n *node) endFlight(f *flight) {
	for i, x := range n.flights {
		if x == f {
			n.flights[i] = n.flights[len(n.flights)-1]
			n.flights[len(n.flights)-1] = nil
			n.flights = n.flights[:len(n.flights)-1]
			return
		}
	}
}

// matches reports whether a request with header h selects this variant.
func (e *entry) matches(h http.Header) bool { return valuesMatch(e.vary, e.varyVals, h) }

// touch sets the CLOCK reference bit, writing only if it is clear so that
// hits on a hot entry do not bounce its cache line between cores.
func (e *entry) touch() {
	if !e.ref.Load() {
		e.ref.Store(true)
	}
}

// settle brings the ring up to date after a shard changed: it unlinks the
// entries in gone (already detached), links add (unless it was detached
// meanwhile), evicts until the bound holds, and sweeps a couple of expired
// entries so that dead answers do not sit in memory until the next
// pressure. Call it without holding any shard lock.
func (c *Cache) settle(add *entry, gone []*entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range gone {
		c.unlink(e)
	}
	if add != nil && !add.dead.Load() {
		c.link(add)
	}
	for c.bytes > c.max && c.hand != nil {
		e := c.hand
		if !e.dead.Load() && e.ref.Load() && e.clock() < e.expires {
			e.ref.Store(false) // second chance
			c.hand = e.next
			continue
		}
		c.remove(e)
		c.evictions++
	}
	for i := 0; i < 2 && c.hand != nil; i++ {
		e := c.hand
		if e.dead.Load() || e.clock() >= e.expires {
			c.remove(e)
			continue
		}
		c.hand = e.next
	}
}

// link puts e just behind the hand, the last place the clock will look.
func (c *Cache) link(e *entry) {
	if e.linked {
		return
	}
	if c.hand == nil {
		e.prev, e.next = e, e
		c.hand = e
	} else {
		e.next = c.hand
		e.prev = c.hand.prev
		e.prev.next = e
		c.hand.prev = e
	}
	e.linked = true
	c.entries++
	c.bytes += e.size
}

func (c *Cache) unlink(e *entry) {
	if !e.linked {
		return
	}
	if e.next == e {
		c.hand = nil
	} else {
		if c.hand == e {
			c.hand = e.next
		}
		e.prev.next = e.next
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
	e.linked = false
	c.entries--
	c.bytes -= e.size
}

// remove unlinks e and detaches it from its node. The caller holds c.mu.
func (c *Cache) remove(e *entry) {
	c.unlink(e)
	if e.dead.Load() {
		return
	}
	s := c.shardFor(e.node.hash)
	s.mu.Lock()
	s.detach(e)
	s.dropIfEmpty(e.node)
	s.mu.Unlock()
}
