package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// This file holds the decisions: the bans, kept in a ledger across
// restarts and put in force by the enforcers.

// Ban is a decision to refuse a client: every address in Prefix, until
// Expires.
type Ban struct {
	Prefix netip.Prefix `json:"prefix"`
	// Jail decided it: sshd, moat, an app's jail, or "manual".
	Jail string `json:"jail"`
	// Reason says why, for a person: "5 failed logins within 10m0s".
	Reason string `json:"reason"`
	// Evidence holds the lines that led to it (at most a few hundred
	// bytes each).
	Evidence []string `json:"evidence,omitempty"`
	// Repeat is how many bans of the same address came before this one;
	// each doubles the ban's length.
	Repeat int `json:"repeat,omitempty"`
	// By is "guard" for a ban the detector decided, or who banned by hand.
	By string    `json:"by"`
	At time.Time `json:"at"`
	// Expires is when the ban ends; zero for a ban until it is lifted.
	Expires time.Time `json:"expires,omitzero"`
}

// Left is how long the ban has to run at now: 0 when it has run out, -1
// for a ban until lifted.
func (b Ban) Left(now time.Time) time.Duration {
	if b.Expires.IsZero() {
		return -1
	}
	return max(b.Expires.Sub(now), 0)
}

// Ledger keeps the bans and the sources' read positions across restarts
// (the store implements it).
type Ledger interface {
	SaveBan(ctx context.Context, b Ban) error
	DeleteBan(ctx context.Context, p netip.Prefix) error
	Bans(ctx context.Context) ([]Ban, error)
	SavePosition(ctx context.Context, source, pos string) error
	Position(ctx context.Context, source string) (string, error)
}

// Enforcer puts bans in force: the firewall's kernel sets, the edge's ban
// check, and later a fleet's shared list. A ban with a duration must run
// out by itself (the kernel's element timeout), so that an expired ban
// ends even while moat is not running; d is 0 for a ban until lifted.
type Enforcer interface {
	Ban(ctx context.Context, p netip.Prefix, d time.Duration) error
	Unban(ctx context.Context, p netip.Prefix) error
}

// Peers shares bans with the other nodes of a fleet: each ban decided or
// lifted here is published, and a fleet's subscriber hands the bans of
// other nodes to Warden.Adopt and their unbans to Warden.Release. One
// server needs none; a fleet implements it over its shared store.
type Peers interface {
	Publish(ctx context.Context, b Ban) error
	Withdraw(ctx context.Context, p netip.Prefix) error
}

// StormPolicy says when bans come fast enough to tell a person: Bans
// within Within. The notifier hears of a storm at most once per Within.
type StormPolicy struct {
	Bans   int
	Within time.Duration
}

// WardenOptions wire a Warden to the rest of moat.
type WardenOptions struct {
	Ledger    Ledger
	Enforcers []Enforcer
	// Peers, when set, shares bans with a fleet.
	Peers Peers
	// Record writes a ban or an unban to the activity log.
	Record func(ctx context.Context, action string, b Ban)
	// Storm is called with the bans of a storm (StormPolicy).
	Storm       func(ctx context.Context, bans []Ban)
	StormPolicy StormPolicy
	Logger      *slog.Logger
	Now         func() time.Time
}

// Warden decides, keeps and enforces bans, and runs the jails that lead
// to them. It is safe for concurrent use.
type Warden struct {
	opts WardenOptions
	log  *slog.Logger

	// change serialises bans and unbans, so that the ledger, the
	// enforcers and the list agree.
	change sync.Mutex

	// index answers "is this address banned?" for the jails and the
	// edge: the edge's enforcer, for clients the kernel cannot see.
	index *Set

	mu        sync.Mutex
	bans      map[netip.Prefix]Ban
	ignore    []netip.Prefix
	jails     map[string]*jail
	recent    []time.Time // when the last bans were decided, for storms
	lastStorm time.Time
	stats     Stats
}

// Stats counts what the guard has seen since it started.
type Stats struct {
	// Lines read, and failures recognised in them, per jail.
	Lines    map[string]int64 `json:"lines"`
	Failures map[string]int64 `json:"failures"`
	// Bans decided per jail (manual ones under "manual"), and unbans.
	Bans   map[string]int64 `json:"bans"`
	Unbans int64            `json:"unbans"`
	// Active is the number of bans in force; Tracked the addresses whose
	// failures are being counted.
	Active  int `json:"active"`
	Tracked int `json:"tracked"`
}

// NewWarden returns a warden with no jails; Restore puts the ledger's
// bans back in force, Configure starts the jails.
func NewWarden(o WardenOptions) *Warden {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StormPolicy.Bans <= 0 {
		o.StormPolicy = StormPolicy{Bans: 20, Within: time.Minute}
	}
	return &Warden{
		opts:  o,
		log:   o.Logger,
		index: NewSet(o.Now),
		bans:  map[netip.Prefix]Ban{},
		jails: map[string]*jail{},
		stats: Stats{Lines: map[string]int64{}, Failures: map[string]int64{}, Bans: map[string]int64{}},
	}
}

// ErrRefused marks a ban the warden refuses: of loopback, of an
// ignore-listed address, or of the caller's own address.
var ErrRefused = errors.New("ban refused")

// ErrNotBanned is the error of an unban of a prefix that is not banned.
var ErrNotBanned = errors.New("not banned")

// Restore puts the ledger's bans back in force with the time they have
// left, and forgets those that ran out while moat was stopped.
func (w *Warden) Restore(ctx context.Context) error {
	if w.opts.Ledger == nil {
		return nil
	}
	w.change.Lock()
	defer w.change.Unlock()
	bans, err := w.opts.Ledger.Bans(ctx)
	if err != nil {
		return fmt.Errorf("guard: reading the bans: %w", err)
	}
	now := w.opts.Now()
	for _, b := range bans {
		if b.Left(now) == 0 {
			if err := w.opts.Ledger.DeleteBan(ctx, b.Prefix); err != nil {
				return fmt.Errorf("guard: forgetting the expired ban of %s: %w", b.Prefix, err)
			}
			continue
		}
		w.enforce(ctx, b, now)
		w.mu.Lock()
		w.bans[b.Prefix] = b
		w.mu.Unlock()
		w.remember(b)
	}
	return nil
}

// Ban bans b.Prefix for d (0: until lifted), by hand. It is refused for
// loopback, an ignore-listed address, or a prefix that contains one of
// spare (the caller's own addresses), each with the reason.
func (w *Warden) Ban(ctx context.Context, p netip.Prefix, d time.Duration, by, reason string, spare []netip.Addr) (Ban, error) {
	p = p.Masked()
	if a := p.Addr().Unmap(); a != p.Addr() {
		p = netip.PrefixFrom(a, max(p.Bits()-96, 0))
	}
	for _, a := range spare {
		if a.IsValid() && p.Contains(a.Unmap()) {
			return Ban{}, fmt.Errorf("refusing to ban %s: it contains your own address %s, and the ban would cut you off: %w", p, a.Unmap(), ErrRefused)
		}
	}
	if why := w.spared(p); why != "" {
		return Ban{}, fmt.Errorf("refusing to ban %s: %s: %w", p, why, ErrRefused)
	}
	now := w.opts.Now()
	if reason == "" {
		reason = "banned by hand"
	}
	b := Ban{Prefix: p, Jail: "manual", Reason: reason, By: by, At: now}
	if d > 0 {
		b.Expires = now.Add(d)
	}
	return b, w.put(ctx, b)
}

// put keeps, enforces and publishes a ban decided here.
func (w *Warden) put(ctx context.Context, b Ban) error {
	if err := w.keep(ctx, b); err != nil {
		return err
	}
	if w.opts.Peers != nil {
		if err := w.opts.Peers.Publish(ctx, b); err != nil {
			w.log.Warn("guard: a ban was not shared with the fleet", "prefix", b.Prefix, "err", err)
		}
	}
	return nil
}

// Adopt keeps and enforces a ban another node of the fleet decided; it is
// not published again. An ignore-listed or loopback prefix is refused, as
// here.
func (w *Warden) Adopt(ctx context.Context, b Ban) error {
	if why := w.spared(b.Prefix.Masked()); why != "" {
		return fmt.Errorf("refusing %s from the fleet: %s: %w", b.Prefix, why, ErrRefused)
	}
	if b.Left(w.opts.Now()) == 0 {
		return nil
	}
	b.Prefix = b.Prefix.Masked()
	return w.keep(ctx, b)
}

// spared says why p must not be banned, or "" when it may be.
func (w *Warden) spared(p netip.Prefix) string {
	if p.Addr().IsLoopback() || p.Contains(netip.IPv6Loopback()) || p.Contains(netip.AddrFrom4([4]byte{127, 0, 0, 1})) {
		return "it is (or contains) a loopback address"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ig := range w.ignore {
		if ig.Overlaps(p) {
			return fmt.Sprintf("it overlaps %s on the ignore list (remove it from guard.ignore first)", ig)
		}
	}
	return ""
}

// Unban lifts the ban of exactly p, here and in the fleet.
func (w *Warden) Unban(ctx context.Context, p netip.Prefix, by string) (Ban, error) {
	b, err := w.unban(ctx, p, by)
	if err == nil && w.opts.Peers != nil {
		if err := w.opts.Peers.Withdraw(ctx, b.Prefix); err != nil {
			w.log.Warn("guard: an unban was not shared with the fleet", "prefix", b.Prefix, "err", err)
		}
	}
	return b, err
}

// Release lifts a ban that another node of the fleet lifted; it is not
// withdrawn again.
func (w *Warden) Release(ctx context.Context, p netip.Prefix, by string) (Ban, error) {
	return w.unban(ctx, p, by)
}

func (w *Warden) unban(ctx context.Context, p netip.Prefix, by string) (Ban, error) {
	p = p.Masked()
	if a := p.Addr().Unmap(); a != p.Addr() {
		p = netip.PrefixFrom(a, max(p.Bits()-96, 0))
	}
	w.change.Lock()
	defer w.change.Unlock()
	w.mu.Lock()
	b, ok := w.bans[p]
	w.mu.Unlock()
	if !ok || b.Left(w.opts.Now()) == 0 {
		return Ban{}, fmt.Errorf("%s: %w (moat guard list shows the bans)", p, ErrNotBanned)
	}
	if err := w.lift(ctx, b); err != nil {
		return Ban{}, err
	}
	w.mu.Lock()
	w.stats.Unbans++
	w.mu.Unlock()
	b.By = by
	w.record(ctx, "guard.unban", b)
	return b, nil
}

// lift removes b from the enforcers, the ledger and the list. The caller
// holds w.change.
func (w *Warden) lift(ctx context.Context, b Ban) error {
	var errs []error
	for _, e := range w.opts.Enforcers {
		if err := e.Unban(ctx, b.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if w.opts.Ledger != nil {
		if err := w.opts.Ledger.DeleteBan(ctx, b.Prefix); err != nil {
			return fmt.Errorf("guard: unbanning %s: %w", b.Prefix, err)
		}
	}
	w.index.Unban(ctx, b.Prefix)
	w.mu.Lock()
	delete(w.bans, b.Prefix)
	w.mu.Unlock()
	if len(errs) > 0 {
		// The ledger no longer has it; what an enforcer kept runs out
		// by its timeout.
		w.log.Warn("guard: an enforcer kept a lifted ban", "prefix", b.Prefix, "err", errors.Join(errs...))
	}
	return nil
}

// decide puts in force a ban the detector decided.
func (w *Warden) decide(ctx context.Context, d Decision) {
	now := w.opts.Now()
	b := Ban{
		Prefix:   d.Prefix,
		Jail:     d.Jail,
		Reason:   fmt.Sprintf("%d failed logins within %s", d.Failures, w.findTime(d.Jail)),
		Evidence: slices.Clone(d.Evidence),
		Repeat:   d.Repeat,
		By:       "guard",
		At:       now,
		Expires:  now.Add(d.Duration),
	}
	if d.Repeat > 0 {
		b.Reason += fmt.Sprintf("; banned %d times before, so for %s", d.Repeat, d.Duration)
	}
	if err := w.put(ctx, b); err != nil {
		w.log.Error("guard: a ban was decided but not kept", "prefix", b.Prefix, "jail", b.Jail, "err", err)
	}
}

// keep keeps and enforces b. A ban already covered by a longer one is not added again; bans
// that b covers are replaced by it, because the kernel's interval sets
// refuse overlapping elements.
func (w *Warden) keep(ctx context.Context, b Ban) error {
	w.change.Lock()
	defer w.change.Unlock()
	now := w.opts.Now()
	w.mu.Lock()
	var covered []Ban
	for p, old := range w.bans {
		if !p.Overlaps(b.Prefix) || old.Left(now) == 0 {
			continue
		}
		if p.Bits() < b.Prefix.Bits() {
			// A wider ban holds the address already; it is never cut
			// short or narrowed for a narrower one.
			w.mu.Unlock()
			w.log.Info("guard: already banned", "prefix", b.Prefix, "by", p, "until", old.Expires)
			return nil
		}
		covered = append(covered, old)
		// No ban is made shorter by the one that replaces it.
		if p != b.Prefix && !outlasts(b, old) {
			b.Expires = old.Expires
		}
	}
	w.mu.Unlock()
	for _, old := range covered {
		if err := w.lift(ctx, old); err != nil {
			return err
		}
	}
	if w.opts.Ledger != nil {
		if err := w.opts.Ledger.SaveBan(ctx, b); err != nil {
			return fmt.Errorf("guard: keeping the ban of %s: %w", b.Prefix, err)
		}
	}
	w.enforce(ctx, b, now)
	w.mu.Lock()
	w.bans[b.Prefix] = b
	w.stats.Bans[b.Jail]++
	w.mu.Unlock()
	w.remember(b)
	w.record(ctx, "guard.ban", b)
	w.storm(ctx, b, now)
	return nil
}

// outlasts reports whether a ends no earlier than b.
func outlasts(a, b Ban) bool {
	return a.Expires.IsZero() || (!b.Expires.IsZero() && !a.Expires.Before(b.Expires))
}

// enforce hands b to every enforcer. One that fails (the firewall is
// off, say) does not stop the others; the ban stays kept.
func (w *Warden) enforce(ctx context.Context, b Ban, now time.Time) {
	d := b.Left(now)
	if d < 0 {
		d = 0
	}
	w.index.Ban(ctx, b.Prefix, d)
	for _, e := range w.opts.Enforcers {
		if err := e.Ban(ctx, b.Prefix, d); err != nil {
			w.log.Warn("guard: a ban is not in force everywhere", "prefix", b.Prefix, "err", err)
		}
	}
}

// remember tells b's jail of the ban, so that the next one of the same
// address is longer.
func (w *Warden) remember(b Ban) {
	w.mu.Lock()
	j := w.jails[b.Jail]
	w.mu.Unlock()
	if j != nil && j.det != nil {
		j.det.Remember(b.Prefix, b.Repeat+1, b.At)
	}
}

func (w *Warden) record(ctx context.Context, action string, b Ban) {
	if w.opts.Record != nil {
		w.opts.Record(ctx, action, b)
	}
}

// storm tells the notifier when bans come faster than StormPolicy.
func (w *Warden) storm(ctx context.Context, b Ban, now time.Time) {
	sp := w.opts.StormPolicy
	w.mu.Lock()
	w.recent = append(w.recent, now)
	i := 0
	for i < len(w.recent) && now.Sub(w.recent[i]) >= sp.Within {
		i++
	}
	w.recent = w.recent[i:]
	fire := len(w.recent) >= sp.Bans && now.Sub(w.lastStorm) >= sp.Within
	var bans []Ban
	if fire {
		w.lastStorm = now
		for _, x := range w.bans {
			if now.Sub(x.At) < sp.Within {
				bans = append(bans, x)
			}
		}
	}
	w.mu.Unlock()
	if fire && w.opts.Storm != nil {
		slices.SortFunc(bans, func(a, b Ban) int { return a.At.Compare(b.At) })
		w.opts.Storm(ctx, bans)
	}
}

// Expire forgets the bans that have run out (the enforcers end them by
// themselves) and what the detectors no longer need.
func (w *Warden) Expire(ctx context.Context) {
	w.change.Lock()
	defer w.change.Unlock()
	now := w.opts.Now()
	w.mu.Lock()
	var done []netip.Prefix
	for p, b := range w.bans {
		if b.Left(now) == 0 {
			done = append(done, p)
			delete(w.bans, p)
		}
	}
	jails := make([]*jail, 0, len(w.jails))
	for _, j := range w.jails {
		jails = append(jails, j)
	}
	w.mu.Unlock()
	for _, p := range done {
		if w.opts.Ledger != nil {
			if err := w.opts.Ledger.DeleteBan(ctx, p); err != nil {
				w.log.Warn("guard: forgetting an expired ban", "prefix", p, "err", err)
			}
		}
	}
	for _, j := range jails {
		if j.det != nil {
			j.det.Sweep(now)
		}
	}
}

// List returns the bans in force, the newest first.
func (w *Warden) List() []Ban {
	now := w.opts.Now()
	w.mu.Lock()
	out := make([]Ban, 0, len(w.bans))
	for _, b := range w.bans {
		if b.Left(now) != 0 {
			out = append(out, b)
		}
	}
	w.mu.Unlock()
	slices.SortFunc(out, func(a, b Ban) int { return b.At.Compare(a.At) })
	return out
}

// Banned reports whether a ban in force covers addr: the edge's ban check.
func (w *Warden) Banned(addr netip.Addr) bool { return w.index.Banned(addr) }

// Why returns the ban in force that covers addr, if any.
func (w *Warden) Why(addr netip.Addr) (Ban, bool) {
	addr = addr.Unmap()
	now := w.opts.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, b := range w.bans {
		if p.Contains(addr) && b.Left(now) != 0 {
			return b, true
		}
	}
	return Ban{}, false
}

// Stats returns the counts since the warden started.
func (w *Warden) Stats() Stats {
	now := w.opts.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Stats{Lines: clone(w.stats.Lines), Failures: clone(w.stats.Failures), Bans: clone(w.stats.Bans), Unbans: w.stats.Unbans}
	for _, b := range w.bans {
		if b.Left(now) != 0 {
			s.Active++
		}
	}
	for _, j := range w.jails {
		if j.det != nil {
			s.Tracked += j.det.Tracked()
		}
	}
	return s
}

func clone(m map[string]int64) map[string]int64 {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (w *Warden) findTime(jail string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if j := w.jails[jail]; j != nil {
		return j.spec.Policy.FindTime
	}
	return DefaultPolicy().FindTime
}
