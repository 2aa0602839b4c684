package guard

import (
	"encoding/binary"
	"math"
	"net/netip"
	"strings"
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
//
// A wide scan shows the detector a million addresses that fail once and
// never come back, so what it holds per address is kept small: IPv4 and
// IPv6 are kept apart, each under a key of plain bytes (a netip.Addr
// would cost 24 bytes and a pointer for the GC to follow), and a record
// holds its latest attempt inline and the rest only when there is a rest.
type Detector struct {
	jail   string
	policy Policy
	ignore []netip.Prefix

	mu sync.Mutex
	v4 family[uint32, uint64]  // the address; the address<<16 | the port
	v6 family[[16]byte, conn6] // the V6Prefix bits of the address; the address and the port
}

// family is what the detector holds for one address family: K is an
// address (or IPv6 prefix), C a connection.
type family[K, C comparable] struct {
	records map[K]record
	// conns are the connections already counted, and when (unix ns).
	// They are kept apart from the records because a connection is one
	// address and port, while a record may be an IPv6 prefix, and
	// because a connection must stay known for FindTime after a ban has
	// emptied its record.
	conns map[C]int64
	// peak is the most records held since the maps were made (see sweep).
	peak int
}

// conn6 is an IPv6 connection: the address (without its zone, as in the
// records) and the client's port.
type conn6 struct {
	addr [16]byte
	port uint16
}

// record is the attempts of one address within FindTime and its bans.
// Most addresses fail once in a while and are never banned, so the
// latest attempt is inline and the earlier ones and the ban history are
// allocated only for the addresses that have them: one attempt costs a
// 32-byte record and nothing else.
type record struct {
	at   int64  // when the latest attempt was (unix ns), or none
	line string // its line
	more *history
}

// none is record.at when the record holds no attempt: every attempt
// left the window, or the last ban emptied it.
const none = math.MinInt64

// history is the part of a record that most addresses never need.
type history struct {
	earlier []failure // the attempts before the latest, oldest first
	bans    int       // bans so far
	lastBan int64     // when the last one ends (unix ns): history is kept MaxBanTime after
}

// failure is one attempt held as evidence: when, and its line.
type failure struct {
	at   int64
	line string
}

// maxEvidence bounds the length of one evidence line kept.
const maxEvidence = 200

// shrinkFloor is the size below which a map is never rebuilt to give
// memory back after a sweep: rebuilding small maps would gain nothing.
const shrinkFloor = 4096

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
	return &Detector{jail: jail, policy: p, ignore: ignore, v4: newFamily[uint32, uint64](), v6: newFamily[[16]byte, conn6]()}
}

func newFamily[K, C comparable]() family[K, C] {
	return family[K, C]{records: map[K]record{}, conns: map[C]int64{}}
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
	p := d.key(addr)
	t := now.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	if addr.Is4() {
		b := addr.As4()
		a4 := binary.BigEndian.Uint32(b[:])
		return observe(d, &d.v4, a4, uint64(a4)<<16|uint64(a.Port), a.Port, p, line, t)
	}
	return observe(d, &d.v6, p.Addr().As16(), conn6{addr.As16(), a.Port}, a.Port, p, line, t)
}

// observe is Observe within family f, under d's lock: k is the record the
// attempt counts in, c its connection (when port is not 0), and p what a
// ban is for.
func observe[K, C comparable](d *Detector, f *family[K, C], k K, c C, port uint16, p netip.Prefix, line string, t int64) (Decision, bool) {
	window := int64(d.policy.FindTime)
	if port != 0 {
		if seen, ok := f.conns[c]; ok && t-seen < window {
			return Decision{}, false
		}
		f.conns[c] = t
	}
	r, ok := f.records[k]
	if !ok {
		r.at = none
	}
	r.drop(t, window)
	r.add(t, evidence(line))
	n := r.len()
	if n < d.policy.MaxRetry {
		f.records[k] = r
		f.peak = max(f.peak, len(f.records))
		return Decision{}, false
	}
	if r.more == nil {
		r.more = &history{} // MaxRetry is 1
	}
	h := r.more
	dur := d.policy.BanTime
	for range h.bans {
		dur *= 2
		if dur >= d.policy.MaxBanTime {
			dur = d.policy.MaxBanTime
			break
		}
	}
	dec := Decision{Prefix: p, Duration: dur, Jail: d.jail, Failures: n, Evidence: r.lines(n), Repeat: h.bans}
	h.bans++
	h.lastBan = t + int64(dur)
	h.earlier = nil
	r.at, r.line = none, ""
	f.records[k] = r
	return dec, true
}

// evidence is line as a ban keeps it: at most maxEvidence bytes. A line
// that is cut is copied, so that the rest of it is not kept alive too.
func evidence(line string) string {
	if len(line) > maxEvidence {
		return strings.Clone(line[:maxEvidence])
	}
	return line
}

// drop forgets the attempts that were out of the window at t, from the
// oldest on, and stops at the first one still in it.
func (r *record) drop(t, window int64) {
	if r.more != nil {
		e := r.more.earlier
		i := 0
		for i < len(e) && t-e[i].at >= window {
			i++
		}
		clear(e[:i]) // let their lines go
		r.more.earlier = e[i:]
		if len(r.more.earlier) > 0 {
			return
		}
	}
	if r.at != none && t-r.at >= window {
		r.at, r.line = none, ""
	}
}

// add appends an attempt: it becomes the latest, and the latest so far,
// if any, the last of the earlier ones.
func (r *record) add(t int64, line string) {
	if r.at != none {
		if r.more == nil {
			r.more = &history{}
		}
		r.more.earlier = append(r.more.earlier, failure{r.at, r.line})
	}
	r.at, r.line = t, line
}

// len is how many attempts r holds.
func (r *record) len() int {
	n := 0
	if r.more != nil {
		n = len(r.more.earlier)
	}
	if r.at != none {
		n++
	}
	return n
}

// lines is the evidence of r's n attempts, oldest first.
func (r *record) lines(n int) []string {
	lines := make([]string, 0, n)
	if r.more != nil {
		for _, a := range r.more.earlier {
			lines = append(lines, a.line)
		}
	}
	if r.at != none {
		lines = append(lines, r.line)
	}
	return lines
}

// Sweep forgets what no longer matters at now: attempts out of the window,
// counted connections, and the ban history of addresses whose last ban is
// older than MaxBanTime (their next ban starts from BanTime again).
func (d *Detector) Sweep(now time.Time) {
	t := now.UnixNano()
	window, keep := int64(d.policy.FindTime), int64(d.policy.MaxBanTime)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.v4.sweep(t, window, keep)
	d.v6.sweep(t, window, keep)
}

func (f *family[K, C]) sweep(t, window, keep int64) {
	for c, seen := range f.conns {
		if t-seen >= window {
			delete(f.conns, c)
		}
	}
	for k, r := range f.records {
		live := r.at != none && t-r.at < window
		if !live && (r.more == nil || r.more.bans == 0 || t-r.more.lastBan >= keep) {
			delete(f.records, k)
		}
	}
	// A Go map keeps its size after deletes: after a wide scan has
	// passed, copy what is left into maps of their own size, or the
	// scan's peak would stay allocated for as long as moat runs.
	if f.peak >= shrinkFloor && len(f.records) <= f.peak/4 {
		f.records, f.conns = resized(f.records), resized(f.conns)
		f.peak = len(f.records)
	}
}

// resized is a copy of m in a map made for its size.
func resized[K comparable, V any](m map[K]V) map[K]V {
	fresh := make(map[K]V, len(m))
	for k, v := range m {
		fresh[k] = v
	}
	return fresh
}

// Tracked is how many addresses (or IPv6 prefixes) the detector holds.
func (d *Detector) Tracked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.v4.records) + len(d.v6.records)
}
