package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the jails: a source and a filter feeding a detector,
// whose decisions go to the warden.

// Source is a stream of log lines that can be resumed: a log file or the
// journal.
type Source interface {
	// Key names the source for its saved position, like
	// "file:/var/log/auth.log".
	Key() string
	// Follow calls emit with each line and the position after it, from
	// pos on, until ctx ends; an empty pos starts at the source's end, so
	// that a first start does not ban for old history.
	Follow(ctx context.Context, pos string, emit func(line, pos string) error) error
}

// JailSpec configures a jail.
type JailSpec struct {
	Name   string
	Policy Policy
	// Filter recognises failures in Source's lines; a jail without a
	// source is fed by events (Fail) only.
	Filter Filter
	Source Source
}

type jail struct {
	spec JailSpec
	det  *Detector
	n    *counts // the jail's counts, kept across Configure
	stop context.CancelFunc
	done chan struct{}
}

// counts are what a jail has read and recognised, counted without a lock:
// they go up on every line.
type counts struct{ lines, failures atomic.Int64 }

// Configure replaces the jails and the ignore list, starting each jail's
// source under life (which ends them all). A jail whose policy is the same
// as before keeps its counts; every jail learns the history of the
// addresses it banned before (from Restore, and from earlier jails), so
// that their next bans are longer. Bans of addresses now on the ignore
// list are lifted. After Stop it does nothing.
func (w *Warden) Configure(life context.Context, specs []JailSpec, ignore []netip.Prefix) {
	w.config.Lock()
	defer w.config.Unlock()
	if w.stopped {
		return
	}
	w.mu.Lock()
	old := w.jails
	sameIgnore := slices.Equal(w.ignore, ignore)
	w.ignore = append([]netip.Prefix(nil), ignore...)
	w.jails = map[string]*jail{}
	w.mu.Unlock()
	for _, j := range old {
		j.halt()
	}
	next := map[string]*jail{}
	keep := DefaultPolicy().MaxBanTime
	w.mu.Lock()
	n := make(map[string]*counts, len(specs))
	for _, s := range specs {
		if w.counts[s.Name] == nil {
			w.counts[s.Name] = &counts{}
		}
		n[s.Name] = w.counts[s.Name]
	}
	w.mu.Unlock()
	for _, s := range specs {
		j := &jail{spec: s, n: n[s.Name]}
		if o := old[s.Name]; o != nil && o.spec.Policy == s.Policy && sameIgnore {
			j.det = o.det
		} else {
			j.det = NewDetector(s.Name, s.Policy, ignore)
		}
		if j.spec.Source != nil && j.spec.Filter != nil {
			j.done = make(chan struct{})
		}
		next[s.Name] = j
		keep = max(keep, s.Policy.MaxBanTime)
	}
	w.mu.Lock()
	w.jails = next
	w.keepHistory = keep
	past := make([]Ban, 0, len(w.past))
	for _, b := range w.past {
		past = append(past, b)
	}
	w.mu.Unlock()
	for _, b := range past {
		w.remember(b)
	}
	for _, b := range w.List() {
		if w.spared(b.Prefix) == "" {
			continue
		}
		// An address put on the ignore list is let in at once.
		w.change.Lock()
		err := w.lift(context.WithoutCancel(life), b, true)
		w.change.Unlock()
		if err != nil {
			w.log.Error("guard: the ban of an ignore-listed address stays", "prefix", b.Prefix, "err", err)
			continue
		}
		b.By, b.Reason = "guard", "ignore-listed"
		w.record(life, "guard.unban", b)
	}
	for _, j := range next {
		if j.done != nil {
			pos := w.startAt(life, j)
			ctx, stop := context.WithCancel(life)
			j.stop = stop
			go w.follow(ctx, j, pos)
		}
	}
}

// positionKey names where j's source's position is saved.
func positionKey(j *jail) string { return "jail " + j.spec.Name + " " + j.spec.Source.Key() }

// startAt is where j's source starts: where it stopped last time, or,
// the first time, at the end of what is there now (so that old history
// bans nobody). It is found before Configure returns, so that a line
// written after it is never missed.
func (w *Warden) startAt(ctx context.Context, j *jail) string {
	src := j.spec.Source
	if w.opts.Ledger != nil {
		pos, err := w.opts.Ledger.Position(ctx, positionKey(j))
		if err != nil {
			w.log.Warn("guard: no saved position; starting at the end", "source", src.Key(), "err", err)
		}
		if pos != "" {
			return pos
		}
	}
	if e, ok := src.(interface{ End() (string, error) }); ok {
		if end, err := e.End(); err == nil {
			return end
		}
	}
	return ""
}

// Stop ends every jail's source and waits for them, saving where each
// stopped. Configure does nothing after it.
func (w *Warden) Stop() {
	w.config.Lock()
	defer w.config.Unlock()
	w.stopped = true
	w.mu.Lock()
	jails := w.jails
	w.jails = map[string]*jail{}
	w.mu.Unlock()
	for _, j := range jails {
		j.halt()
	}
}

func (j *jail) halt() {
	if j.stop != nil {
		j.stop()
		<-j.done
	}
}

// positionEvery is how often a source's position is saved while lines
// come; it is also saved at each ban and when the source stops, so a
// restart repeats at most this much of the log (the counts of which were
// lost with the process anyway).
const positionEvery = time.Second

// follow feeds j's source through its filter and detector from pos until
// ctx ends, restarting a source that fails from where it was.
func (w *Warden) follow(ctx context.Context, j *jail, pos string) {
	defer close(j.done)
	src, key := j.spec.Source, positionKey(j)
	saved := ""
	save := func() {
		if w.opts.Ledger == nil || pos == saved {
			return
		}
		// Saved even as ctx ends: that is when it matters most.
		if err := w.opts.Ledger.SavePosition(context.WithoutCancel(ctx), key, pos); err != nil {
			w.log.Warn("guard: saving a source's position", "source", src.Key(), "err", err)
			return
		}
		saved = pos
	}
	defer save()
	save()
	last := time.Now()
	backoff := time.Second
	for ctx.Err() == nil {
		began := time.Now()
		err := src.Follow(ctx, pos, func(line, p string) error {
			pos = p
			if w.line(ctx, j, line) || time.Since(last) >= positionEvery {
				save()
				last = time.Now()
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Minute {
			backoff = time.Second // it worked for a while
		}
		w.log.Warn("guard: a source stopped; trying again", "source", src.Key(), "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// line deals with one line of j's source, and reports whether it led to a
// ban.
func (w *Warden) line(ctx context.Context, j *jail, line string) bool {
	a, ok := j.spec.Filter.Match(line)
	j.n.lines.Add(1)
	if !ok {
		return false
	}
	j.n.failures.Add(1)
	return w.observe(ctx, j, a, line)
}

func (w *Warden) observe(ctx context.Context, j *jail, a Attempt, line string) bool {
	if w.index.Banned(a.Addr) {
		// A line that arrives after the ban (written before it took
		// hold) must not make the next ban longer.
		return false
	}
	d, ok := j.det.Observe(a, line, w.opts.Now())
	if ok {
		w.decide(ctx, d)
	}
	return ok
}

// Fail counts a failed login that moat saw itself (its own login, an
// app's 401 through the edge) in jail. It does nothing for a jail that is
// not configured.
func (w *Warden) Fail(ctx context.Context, jailName string, addr netip.Addr, detail string) {
	w.mu.Lock()
	j := w.jails[jailName]
	w.mu.Unlock()
	if j == nil {
		return
	}
	j.n.failures.Add(1)
	w.observe(ctx, j, Attempt{Addr: addr, Kind: jailName}, detail)
}

// File is a log file followed like tail -F.
type File struct {
	Path string
	Poll time.Duration
}

// Key implements Source.
func (f File) Key() string { return "file:" + f.Path }

// End is the position at the end of the file as it is now (the start of
// a file that does not exist yet, which is read whole when it appears).
func (f File) End() (string, error) {
	var end Position
	ino, size, err := stat(f.Path)
	if err == nil {
		end = Position{Inode: ino, Offset: size}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("guard: %s: %w", f.Path, err)
	}
	b, _ := json.Marshal(end)
	return string(b), nil
}

// Follow implements Source; the position is a Position as JSON.
func (f File) Follow(ctx context.Context, pos string, emit func(line, pos string) error) error {
	var start Position
	if pos == "" {
		var err error
		if pos, err = f.End(); err != nil {
			return err
		}
	}
	if err := json.Unmarshal([]byte(pos), &start); err != nil {
		return fmt.Errorf("guard: %s: saved position %q: %w", f.Path, pos, err)
	}
	t := &Tail{Path: f.Path, Poll: f.Poll}
	return t.Run(ctx, start, func(line string, p Position) error {
		b, _ := json.Marshal(p)
		return emit(line, string(b))
	})
}

var _ Source = File{}

// Set is the edge's enforcer: bans held in memory, for web clients the
// kernel cannot see (behind Cloudflare the kernel sees Cloudflare's
// address). Lookups cost one map probe per prefix length in use in the
// client's address family.
type Set struct {
	// size is len(entries), read without the lock: with no ban (the
	// usual case) a request pays one atomic load.
	size    atomic.Int64
	mu      sync.RWMutex
	entries map[netip.Prefix]time.Time // expiry; zero for until lifted
	lengths [2]map[int]int             // per family (0: IPv4, 1: IPv6): prefix length -> entries
	now     func() time.Time
}

// NewSet returns an empty set; now is time.Now when nil.
func NewSet(now func() time.Time) *Set {
	if now == nil {
		now = time.Now
	}
	return &Set{entries: map[netip.Prefix]time.Time{}, lengths: [2]map[int]int{{}, {}}, now: now}
}

// familyOf is 0 for IPv4 (and IPv4-mapped), 1 for IPv6.
func familyOf(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 0
	}
	return 1
}

// setKey writes p as the set keeps it: masked, IPv4-mapped as IPv4.
func setKey(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// Ban implements Enforcer.
func (s *Set) Ban(_ context.Context, p netip.Prefix, d time.Duration) error {
	p = setKey(p)
	var until time.Time
	if d > 0 {
		until = s.now().Add(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[p]; !ok {
		s.lengths[familyOf(p.Addr())][p.Bits()]++
		s.size.Add(1)
	}
	s.entries[p] = until
	// Forget what has run out, now and then.
	if len(s.entries)%64 == 0 {
		now := s.now()
		for q, t := range s.entries {
			if !t.IsZero() && !now.Before(t) {
				s.remove(q)
			}
		}
	}
	return nil
}

// Unban implements Enforcer.
func (s *Set) Unban(_ context.Context, p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(setKey(p))
	return nil
}

func (s *Set) remove(p netip.Prefix) {
	if _, ok := s.entries[p]; !ok {
		return
	}
	delete(s.entries, p)
	s.size.Add(-1)
	l := s.lengths[familyOf(p.Addr())]
	if l[p.Bits()]--; l[p.Bits()] == 0 {
		delete(l, p.Bits())
	}
}

// Banned reports whether a ban in force covers addr.
func (s *Set) Banned(addr netip.Addr) bool {
	if s.size.Load() == 0 {
		return false
	}
	addr = addr.Unmap().WithZone("")
	s.mu.RLock()
	defer s.mu.RUnlock()
	for bits := range s.lengths[familyOf(addr)] {
		p, _ := addr.Prefix(bits)
		if until, ok := s.entries[p]; ok && (until.IsZero() || s.now().Before(until)) {
			return true
		}
	}
	return false
}

var _ Enforcer = (*Set)(nil)

// JournalSource is the systemd journal as a Source; the position is the
// journal's cursor.
type JournalSource struct{ *Journal }

// Key implements Source.
func (s JournalSource) Key() string {
	key := "journal:" + strings.Join(s.Matches, ",")
	if len(s.Files) > 0 || s.Directory != "" {
		key += ":" + s.Directory + strings.Join(s.Files, ",")
	}
	return key
}

// End is the cursor of the last matching entry now, so that Configure
// knows where a first start begins before it returns ("" when there is
// none yet: Run then reads from the first one that comes).
func (s JournalSource) End() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.lastCursor(ctx)
}

// Follow implements Source.
func (s JournalSource) Follow(ctx context.Context, pos string, emit func(line, pos string) error) error {
	return s.Run(ctx, pos, emit)
}

var _ Source = JournalSource{}
