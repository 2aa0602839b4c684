package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// Ended is when a wider ban replaced this one: it is history then,
	// never in force again.
	Ended time.Time `json:"ended,omitzero"`
}

// Left is how long the ban has to run at now: 0 when it has run out (or
// was replaced), -1 for a ban until lifted.
func (b Ban) Left(now time.Time) time.Duration {
	switch {
	case !b.Ended.IsZero():
		return 0
	case b.Expires.IsZero():
		return -1
	}
	return max(b.Expires.Sub(now), 0)
}

// end is when b stopped or stops holding, for its history: far ahead for
// a ban until lifted.
func (b Ban) end() time.Time {
	switch {
	case !b.Ended.IsZero():
		return b.Ended
	case b.Expires.IsZero():
		return b.At.Add(100 * 365 * 24 * time.Hour)
	}
	return b.Expires
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
	// enforcers and the list agree; config serialises Configure and
	// Stop.
	change  sync.Mutex
	config  sync.Mutex
	stopped bool

	// index answers "is this address banned?" for the jails and the
	// edge: the edge's enforcer, for clients the kernel cannot see.
	index *Set

	mu   sync.Mutex
	bans map[netip.Prefix]Ban // in force
	// past is the latest ban of each address, in force or not, for as
	// long as keepHistory after it ended: its repeat count.
	past        map[netip.Prefix]Ban
	keepHistory time.Duration
	ignore      []netip.Prefix
	jails       map[string]*jail
	recent      []time.Time // when the last bans were decided, for storms
	lastStorm   time.Time
	stats       Stats              // bans and unbans; lines and failures are in counts
	counts      map[string]*counts // by jail name, never removed
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
		opts:        o,
		log:         o.Logger,
		index:       NewSet(o.Now),
		bans:        map[netip.Prefix]Ban{},
		past:        map[netip.Prefix]Ban{},
		keepHistory: DefaultPolicy().MaxBanTime,
		jails:       map[string]*jail{},
		counts:      map[string]*counts{},
		stats:       Stats{Bans: map[string]int64{}},
	}
}

// ErrRefused marks a ban the warden refuses: of loopback, of an
// ignore-listed address, of the caller's own address, or of a prefix that
// mixes the address families.
var ErrRefused = errors.New("ban refused")

// ErrNotBanned is the error of an unban of a prefix that is not banned.
var ErrNotBanned = errors.New("not banned")

// ErrAlreadyBanned is the error of a ban of a prefix inside a wider ban
// in force: nothing changed.
var ErrAlreadyBanned = errors.New("already banned")

// mapped is where IPv6 writes IPv4 addresses (::ffff:a.b.c.d).
var mapped = netip.MustParsePrefix("::ffff:0:0/96")

// normalize writes p the one way bans are kept: masked, and an
// IPv4-mapped prefix as IPv4. An IPv6 prefix around all of the mapped
// space is refused: it would be every IPv4 client to one enforcer and
// none to another.
func normalize(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("%s is not a prefix: %w", p, ErrRefused)
	}
	p = p.Masked()
	switch {
	case p.Addr().Is4In6() && p.Bits() >= 96:
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	case p.Addr().Is6() && p.Overlaps(mapped):
		return p, fmt.Errorf("%s holds every IPv4-mapped address (%s); write IPv4 as IPv4: %w", p, mapped, ErrRefused)
	}
	return p, nil
}

// Restore reads the bans the ledger kept: those still in force go back on
// the list and into the edge's check (Reenforce puts them in the kernel,
// once the firewall is up), and each banned address's history goes back
// to its jail, so that its next ban is longer. A row that is not a ban
// moat would make now (written before a fix, say) is dropped with a
// warning; a ban inside a wider one in force is history only. Call it
// before Configure.
func (w *Warden) Restore(ctx context.Context) error {
	if w.opts.Ledger == nil {
		return nil
	}
	rows, err := w.opts.Ledger.Bans(ctx)
	if err != nil {
		return fmt.Errorf("guard: reading the bans: %w", err)
	}
	// The widest first, so that a ban inside one in force is seen to be.
	slices.SortFunc(rows, func(a, b Ban) int { return a.Prefix.Bits() - b.Prefix.Bits() })
	w.change.Lock()
	defer w.change.Unlock()
	now := w.opts.Now()
	for _, b := range rows {
		p, err := normalize(b.Prefix)
		if err != nil || p != b.Prefix {
			w.log.Warn("guard: dropping a kept ban moat would not make now", "prefix", b.Prefix, "err", err)
			if derr := w.opts.Ledger.DeleteBan(ctx, b.Prefix); derr != nil {
				return fmt.Errorf("guard: dropping the ban of %s: %w", b.Prefix, derr)
			}
			continue
		}
		w.mu.Lock()
		if old, ok := w.past[p]; !ok || old.At.Before(b.At) {
			w.past[p] = b
		}
		inside := false
		for q, x := range w.bans {
			if q.Overlaps(p) && x.Left(now) != 0 {
				inside = true
			}
		}
		if b.Left(now) != 0 && !inside {
			w.bans[p] = b
			w.index.Ban(ctx, p, max(b.Left(now), 0))
		}
		w.mu.Unlock()
	}
	return nil
}

// BulkEnforcer is an Enforcer that takes many bans at once (the kernel's
// sets, in one transaction), each with the time it has left.
type BulkEnforcer interface {
	Enforcer
	BanAll(ctx context.Context, bans []Ban, now time.Time) error
}

// Reenforce hands every ban in force to every enforcer again: after a
// start, once the firewall is up, and after the firewall was turned on
// or replaced (a table that was gone had none of them).
func (w *Warden) Reenforce(ctx context.Context) {
	w.change.Lock()
	defer w.change.Unlock()
	now := w.opts.Now()
	var bans []Ban
	for _, b := range w.List() {
		if b.Left(now) != 0 {
			bans = append(bans, b)
		}
	}
	if len(bans) == 0 {
		return
	}
	for _, e := range w.opts.Enforcers {
		if be, ok := e.(BulkEnforcer); ok {
			err := be.BanAll(ctx, bans, now)
			if err == nil {
				continue
			}
			w.log.Warn("guard: bans not put back in one go; one by one", "err", err)
		}
		for _, b := range bans {
			if err := e.Ban(ctx, b.Prefix, max(b.Left(now), 0)); err != nil {
				w.log.Warn("guard: a ban is not in force everywhere", "prefix", b.Prefix, "err", err)
			}
		}
	}
}

// Ban bans p for d (0: until lifted), by hand, and returns the ban in
// force. It is refused for loopback, an ignore-listed address, or a
// prefix that contains one of spare (the caller's own addresses), each
// with the reason; a prefix inside a wider ban is ErrAlreadyBanned.
func (w *Warden) Ban(ctx context.Context, p netip.Prefix, d time.Duration, by, reason string, spare []netip.Addr) (Ban, error) {
	p, err := normalize(p)
	if err != nil {
		return Ban{}, err
	}
	for _, a := range spare {
		if a.IsValid() && p.Contains(a.Unmap()) {
			return Ban{}, fmt.Errorf("refusing to ban %s: it contains your own address %s, and the ban would cut you off: %w", p, a.Unmap(), ErrRefused)
		}
	}
	if why := w.spared(p); why != "" {
		return Ban{}, fmt.Errorf("refusing to ban %s: %s: %w", p, why, ErrRefused)
	}
	if d < 0 || (d > 0 && d < time.Second) {
		return Ban{}, fmt.Errorf("a ban of %s: the shortest ban is 1s (0 bans until lifted): %w", d, ErrRefused)
	}
	now := w.opts.Now()
	if reason == "" {
		reason = "banned by hand"
	}
	b := Ban{Prefix: p, Jail: "manual", Reason: reason, By: by, At: now}
	if d > 0 {
		b.Expires = now.Add(d)
	}
	return w.put(ctx, b)
}

// put keeps, enforces and publishes a ban decided here.
func (w *Warden) put(ctx context.Context, b Ban) (Ban, error) {
	kept, err := w.keep(ctx, b)
	if err != nil {
		return kept, err
	}
	if w.opts.Peers != nil {
		if err := w.opts.Peers.Publish(context.WithoutCancel(ctx), kept); err != nil {
			w.log.Warn("guard: a ban was not shared with the fleet", "prefix", kept.Prefix, "err", err)
		}
	}
	return kept, nil
}

// Adopt keeps and enforces a ban another node of the fleet decided; it is
// not published again. It is refused as a ban made here would be.
func (w *Warden) Adopt(ctx context.Context, b Ban) error {
	p, err := normalize(b.Prefix)
	if err != nil {
		return err
	}
	if why := w.spared(p); why != "" {
		return fmt.Errorf("refusing %s from the fleet: %s: %w", p, why, ErrRefused)
	}
	if b.Left(w.opts.Now()) == 0 {
		return nil
	}
	b.Prefix = p
	_, err = w.keep(ctx, b)
	if errors.Is(err, ErrAlreadyBanned) {
		return nil
	}
	return err
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
		if err := w.opts.Peers.Withdraw(context.WithoutCancel(ctx), b.Prefix); err != nil {
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
	p, err := normalize(p)
	if err != nil {
		return Ban{}, err
	}
	ctx = context.WithoutCancel(ctx)
	w.change.Lock()
	w.mu.Lock()
	b, ok := w.bans[p]
	w.mu.Unlock()
	if !ok || b.Left(w.opts.Now()) == 0 {
		w.change.Unlock()
		if wider, ok := w.Why(p.Addr()); ok && wider.Prefix.Bits() <= p.Bits() {
			return Ban{}, fmt.Errorf("%s is not banned by itself: it is inside the ban of %s (jail %s, %s); lift that one: moat guard unban %s: %w",
				p, wider.Prefix, wider.Jail, until(wider), wider.Prefix, ErrNotBanned)
		}
		return Ban{}, fmt.Errorf("%s: %w (moat guard list shows the bans)", p, ErrNotBanned)
	}
	err = w.lift(ctx, b, true)
	w.change.Unlock()
	if err != nil {
		return Ban{}, err
	}
	w.mu.Lock()
	w.stats.Unbans++
	w.mu.Unlock()
	b.By = by
	w.record(ctx, "guard.unban", b)
	return b, nil
}

// until says when b ends, for a person.
func until(b Ban) string {
	if b.Expires.IsZero() {
		return "until lifted"
	}
	return "until " + b.Expires.UTC().Format(time.RFC3339)
}

// lift removes b from the enforcers, then from the ledger (with forget:
// its history too; a ban lifted by hand is forgiven) and the list. An
// enforcer that still holds it is an error, and nothing else changes.
// The caller holds w.change.
func (w *Warden) lift(ctx context.Context, b Ban, forget bool) error {
	for _, e := range w.opts.Enforcers {
		if err := e.Unban(ctx, b.Prefix); err != nil {
			return fmt.Errorf("guard: unbanning %s: %w", b.Prefix, err)
		}
	}
	if w.opts.Ledger != nil && forget {
		if err := w.opts.Ledger.DeleteBan(ctx, b.Prefix); err != nil {
			return fmt.Errorf("guard: unbanning %s: %w", b.Prefix, err)
		}
	}
	w.index.Unban(ctx, b.Prefix)
	w.mu.Lock()
	delete(w.bans, b.Prefix)
	var dets []*Detector
	if forget {
		delete(w.past, b.Prefix)
		for _, j := range w.jails {
			if j.det != nil {
				dets = append(dets, j.det)
			}
		}
	}
	w.mu.Unlock()
	for _, d := range dets {
		d.Forget(b.Prefix)
	}
	return nil
}

// decide puts in force a ban the detector decided. It goes on even when
// the source that led to it stops (a reload, a shutdown): the detector
// has already reset its count, and the line will not be read again.
func (w *Warden) decide(ctx context.Context, d Decision) {
	ctx = context.WithoutCancel(ctx)
	if why := w.spared(d.Prefix); why != "" {
		// An IPv6 /64 counted as one, around an ignore-listed address.
		w.log.Info("guard: not banned", "prefix", d.Prefix, "jail", d.Jail, "why", why)
		return
	}
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
	switch _, err := w.put(ctx, b); {
	case errors.Is(err, ErrAlreadyBanned):
		w.log.Info("guard: already banned", "prefix", b.Prefix, "err", err)
	case err != nil:
		w.log.Error("guard: a ban was decided but not kept", "prefix", b.Prefix, "jail", b.Jail, "err", err)
	}
}

// keep keeps and enforces b, and returns the ban in force. The kernel's
// interval sets refuse overlapping elements, so a prefix inside a wider
// ban is not added (ErrAlreadyBanned), and the bans inside b are replaced
// by it, b then lasting as long as the longest of them; they stay in the
// ledger as history. A ban of the same prefix is replaced. The ledger
// comes first: a ban it cannot keep is not put in force, and the bans it
// would replace stay.
func (w *Warden) keep(ctx context.Context, b Ban) (Ban, error) {
	ctx = context.WithoutCancel(ctx)
	w.change.Lock()
	now := w.opts.Now()
	// Checked again under the lock: Configure may have just put the
	// address on the ignore list.
	if why := w.spared(b.Prefix); why != "" {
		w.change.Unlock()
		return Ban{}, fmt.Errorf("refusing to ban %s: %s: %w", b.Prefix, why, ErrRefused)
	}
	if b.Left(now) == 0 {
		w.change.Unlock()
		return Ban{}, fmt.Errorf("the ban of %s has run out already: %w", b.Prefix, ErrRefused)
	}
	w.mu.Lock()
	var covered []Ban
	for p, old := range w.bans {
		if !p.Overlaps(b.Prefix) {
			continue
		}
		// The same prefix is replaced even if it just ran out: the
		// kernel may hold it a moment longer.
		if old.Left(now) == 0 && p != b.Prefix {
			continue
		}
		if p.Bits() < b.Prefix.Bits() {
			w.mu.Unlock()
			w.change.Unlock()
			return old, fmt.Errorf("%s is inside the ban of %s (jail %s, %s), which stays as it is: %w", b.Prefix, p, old.Jail, until(old), ErrAlreadyBanned)
		}
		covered = append(covered, old)
		if p != b.Prefix && !outlasts(b, old) {
			b.Expires = old.Expires
		}
	}
	w.mu.Unlock()
	if w.opts.Ledger != nil {
		if err := w.opts.Ledger.SaveBan(ctx, b); err != nil {
			w.change.Unlock()
			return Ban{}, fmt.Errorf("guard: keeping the ban of %s: %w", b.Prefix, err)
		}
	}
	for i, old := range covered {
		if old.Prefix != b.Prefix {
			covered[i].Ended = now
			if w.opts.Ledger != nil {
				if err := w.opts.Ledger.SaveBan(ctx, covered[i]); err != nil {
					w.log.Warn("guard: a replaced ban is not marked as such in the ledger", "prefix", old.Prefix, "err", err)
				}
			}
		}
		for _, e := range w.opts.Enforcers {
			if err := e.Unban(ctx, old.Prefix); err != nil {
				w.log.Warn("guard: a replaced ban stays in an enforcer", "prefix", old.Prefix, "err", err)
			}
		}
		w.index.Unban(ctx, old.Prefix)
	}
	w.enforce(ctx, b, now)
	w.mu.Lock()
	for _, old := range covered {
		delete(w.bans, old.Prefix)
		if old.Prefix != b.Prefix {
			w.past[old.Prefix] = old
		}
	}
	w.bans[b.Prefix] = b
	w.past[b.Prefix] = b
	w.stats.Bans[b.Jail]++
	w.mu.Unlock()
	w.change.Unlock()
	w.remember(b)
	w.record(ctx, "guard.ban", b)
	w.storm(ctx, now)
	return b, nil
}

// outlasts reports whether a ends no earlier than b.
func outlasts(a, b Ban) bool {
	return a.Expires.IsZero() || (!b.Expires.IsZero() && !a.Expires.Before(b.Expires))
}

// enforce hands b to the edge's check and every enforcer. One that fails
// (the firewall is off, say) does not stop the others; the ban stays
// kept, and Reenforce puts it in when the firewall is back.
func (w *Warden) enforce(ctx context.Context, b Ban, now time.Time) {
	if b.Left(now) == 0 {
		return // 0 would be until lifted to an enforcer
	}
	d := max(b.Left(now), 0)
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
		j.det.Remember(b.Prefix, b.Repeat+1, b.end())
	}
}

func (w *Warden) record(ctx context.Context, action string, b Ban) {
	if w.opts.Record != nil {
		w.opts.Record(ctx, action, b)
	}
}

// storm tells the notifier, in the background, when bans come faster
// than StormPolicy.
func (w *Warden) storm(ctx context.Context, now time.Time) {
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
		go w.opts.Storm(context.WithoutCancel(ctx), bans)
	}
}

// Expire forgets the bans that have run out (the enforcers end them by
// themselves) and what the detectors no longer need. An expired ban stays
// in the ledger as its address's history for as long as a jail's
// MaxBanTime, so that a restart still makes the next ban longer.
func (w *Warden) Expire(ctx context.Context) {
	w.change.Lock()
	defer w.change.Unlock()
	now := w.opts.Now()
	w.mu.Lock()
	var done []netip.Prefix
	for p, b := range w.bans {
		if b.Left(now) == 0 {
			delete(w.bans, p)
			w.index.Unban(ctx, p)
		}
	}
	keep := w.keepHistory
	for p, b := range w.past {
		if b.Left(now) == 0 && now.Sub(b.end()) >= keep {
			done = append(done, p)
			delete(w.past, p)
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
				w.log.Warn("guard: forgetting an old ban", "prefix", p, "err", err)
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
	s := Stats{Lines: map[string]int64{}, Failures: map[string]int64{}, Bans: maps.Clone(w.stats.Bans), Unbans: w.stats.Unbans}
	for name, n := range w.counts {
		s.Lines[name], s.Failures[name] = n.lines.Load(), n.failures.Load()
	}
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

func (w *Warden) findTime(jail string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if j := w.jails[jail]; j != nil {
		return j.spec.Policy.FindTime
	}
	return DefaultPolicy().FindTime
}
