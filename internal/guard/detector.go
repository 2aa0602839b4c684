package guard

import (
	"net/netip"
	"sync"
	"time"
)

// Policy is a jail's rule: MaxRetry failures within FindTime ban for
// BanTime, doubled for each earlier ban of the same address up to
// MaxBanTime. IPv6 addresses count per prefix of V6Prefix bits, so that an
// attacker cannot rotate through his own subnet.
type Policy struct {
	MaxRetry   int
	FindTime   time.Duration
	BanTime    time.Duration
	MaxBanTime time.Duration
	V6Prefix   int
}

// DefaultPolicy is moat's: 5 failures in 10 minutes ban for 10 minutes,
// repeat offenders up to a week, IPv6 per /64.
func DefaultPolicy() Policy {
	return Policy{MaxRetry: 5, FindTime: 10 * time.Minute, BanTime: 10 * time.Minute, MaxBanTime: 7 * 24 * time.Hour, V6Prefix: 64}
}

// Decision is a ban the detector decided.
type Decision struct {
	Prefix   netip.Prefix
	Duration time.Duration
	Jail     string
	// Failures is how many attempts led to it; Evidence their lines.
	Failures int
	Evidence []string
	// Repeat is how many bans of the same address came before this one.
	Repeat int
}

// Detector counts failed attempts per address in a sliding window and
// decides bans. It is safe for concurrent use.
type Detector struct {
	jail   string
	policy Policy
	ignore []netip.Prefix

	mu    sync.Mutex
	keys  map[netip.Prefix]*record
	conns map[connKey]int64 // connections already counted, and when
}

type record struct {
	times    []int64  // attempts within FindTime, oldest first (unix ns)
	evidence []string // their lines
	bans     int      // bans so far
	lastBan  int64    // when the last one was decided
}

type connKey struct {
	addr netip.Addr
	port uint16
}

// maxEvidence bounds the length of one evidence line kept.
const maxEvidence = 200

// NewDetector returns a detector for jail. Loopback addresses and those
// in ignore are never banned.
func NewDetector(jail string, p Policy, ignore []netip.Prefix) *Detector {
	if p.MaxRetry <= 0 {
		p.MaxRetry = DefaultPolicy().MaxRetry
	}
	if p.V6Prefix <= 0 || p.V6Prefix > 128 {
		p.V6Prefix = DefaultPolicy().V6Prefix
	}
	if p.MaxBanTime < p.BanTime {
		p.MaxBanTime = p.BanTime
	}
	return &Detector{jail: jail, policy: p, ignore: ignore, keys: map[netip.Prefix]*record{}, conns: map[connKey]int64{}}
}

// Ignored reports whether addr is never banned.
func (d *Detector) Ignored(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() || addr.IsUnspecified() {
		return true
	}
	for _, p := range d.ignore {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// key is what an address is counted under: itself for IPv4, its prefix
// for IPv6.
func (d *Detector) key(addr netip.Addr) netip.Prefix {
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.Prefix(d.policy.V6Prefix)
	return p
}

// Observe counts a failed attempt seen at now in line, and returns a ban
// when it makes MaxRetry within FindTime. Attempts from one connection
// (address and source port) count once: OpenSSH writes two lines for one
// attempt at an invalid user.
func (d *Detector) Observe(a Attempt, line string, now time.Time) (Decision, bool) {
	if !a.Addr.IsValid() || d.Ignored(a.Addr) {
		return Decision{}, false
	}
	addr := a.Addr.Unmap()
	t := now.UnixNano()
	window := int64(d.policy.FindTime)
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.Port != 0 {
		ck := connKey{addr, a.Port}
		if seen, ok := d.conns[ck]; ok && t-seen < window {
			return Decision{}, false
		}
		d.conns[ck] = t
	}
	k := d.key(addr)
	r := d.keys[k]
	if r == nil {
		r = &record{}
		d.keys[k] = r
	}
	// Drop what fell out of the window.
	drop := 0
	for drop < len(r.times) && t-r.times[drop] >= window {
		drop++
	}
	r.times, r.evidence = r.times[drop:], r.evidence[drop:]
	if len(line) > maxEvidence {
		line = line[:maxEvidence]
	}
	r.times = append(r.times, t)
	r.evidence = append(r.evidence, line)
	if len(r.times) < d.policy.MaxRetry {
		return Decision{}, false
	}
	dur := d.policy.BanTime
	for range r.bans {
		dur *= 2
		if dur >= d.policy.MaxBanTime {
			dur = d.policy.MaxBanTime
			break
		}
	}
	dec := Decision{Prefix: k, Duration: dur, Jail: d.jail, Failures: len(r.times), Evidence: r.evidence, Repeat: r.bans}
	r.bans++
	r.lastBan = t
	r.times, r.evidence = nil, nil
	return dec, true
}

// Sweep forgets what no longer matters at now: attempts out of the window,
// counted connections, and the ban history of addresses whose last ban is
// older than MaxBanTime (their next ban starts from BanTime again).
func (d *Detector) Sweep(now time.Time) {
	t := now.UnixNano()
	window, history := int64(d.policy.FindTime), int64(d.policy.MaxBanTime)
	d.mu.Lock()
	defer d.mu.Unlock()
	for ck, seen := range d.conns {
		if t-seen >= window {
			delete(d.conns, ck)
		}
	}
	for k, r := range d.keys {
		live := len(r.times) > 0 && t-r.times[len(r.times)-1] < window
		if !live && (r.bans == 0 || t-r.lastBan >= history) {
			delete(d.keys, k)
		}
	}
}

// Tracked is how many addresses (or IPv6 prefixes) the detector holds.
func (d *Detector) Tracked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.keys)
}
