package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// memLedger is a Ledger in memory.
type memLedger struct {
	mu        sync.Mutex
	bans      map[netip.Prefix]Ban
	positions map[string]string
}

func newMemLedger() *memLedger {
	return &memLedger{bans: map[netip.Prefix]Ban{}, positions: map[string]string{}}
}

// SaveBan fails on a cancelled context, as a database would.
func (l *memLedger) SaveBan(ctx context.Context, b Ban) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bans[b.Prefix] = b
	return nil
}

func (l *memLedger) DeleteBan(ctx context.Context, p netip.Prefix) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.bans, p)
	return nil
}

func (l *memLedger) Bans(context.Context) ([]Ban, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Ban
	for _, b := range l.bans {
		out = append(out, b)
	}
	return out, nil
}

func (l *memLedger) SavePosition(_ context.Context, source, pos string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.positions[source] = pos
	return nil
}

func (l *memLedger) Position(_ context.Context, source string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.positions[source], nil
}

// kernel is an Enforcer that refuses overlapping elements, as an nftables
// interval set does, and records what it was told.
type kernel struct {
	mu         sync.Mutex
	set        map[netip.Prefix]time.Duration
	log        []string
	fail       bool
	failUnbans bool
}

func (k *kernel) Ban(_ context.Context, p netip.Prefix, d time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail {
		return errors.New("no table")
	}
	for q := range k.set {
		if q.Overlaps(p) && q != p {
			return fmt.Errorf("conflicting intervals: %s and %s", q, p)
		}
	}
	if k.set == nil {
		k.set = map[netip.Prefix]time.Duration{}
	}
	k.set[p] = d
	k.log = append(k.log, fmt.Sprintf("ban %s %s", p, d))
	return nil
}

func (k *kernel) Unban(_ context.Context, p netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failUnbans {
		return errors.New("netlink: busy")
	}
	delete(k.set, p)
	k.log = append(k.log, "unban "+p.String())
	return nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type wardenTest struct {
	w       *Warden
	ledger  *memLedger
	kernel  *kernel
	clock   *clock
	records []string
	storms  chan []Ban
}

func newWardenTest(t *testing.T) *wardenTest {
	t.Helper()
	wt := &wardenTest{ledger: newMemLedger(), kernel: &kernel{}, clock: &clock{t: time.Unix(1_800_000_000, 0)}, storms: make(chan []Ban, 10)}
	wt.w = NewWarden(WardenOptions{
		Ledger:    wt.ledger,
		Enforcers: []Enforcer{wt.kernel},
		Logger:    slog.New(slog.DiscardHandler),
		Now:       wt.clock.now,
		Record: func(_ context.Context, action string, b Ban) {
			wt.records = append(wt.records, action+" "+b.Prefix.String())
		},
		Storm:       func(_ context.Context, bans []Ban) { wt.storms <- bans },
		StormPolicy: StormPolicy{Bans: 3, Within: time.Minute},
	})
	t.Cleanup(wt.w.Stop)
	return wt
}

var pfx = netip.MustParsePrefix

func TestWardenDecidesKeepsAndEnforces(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: Policy{MaxRetry: 3, FindTime: time.Minute, BanTime: time.Minute, MaxBanTime: time.Hour}}}, nil)
	addr := netip.MustParseAddr("203.0.113.7")
	for i := range 3 {
		wt.w.Fail(ctx, "sshd", addr, fmt.Sprintf("failure %d", i))
	}
	if !wt.w.Banned(addr) || wt.w.Banned(netip.MustParseAddr("203.0.113.8")) {
		t.Fatal("the edge's check does not see the ban, or sees too much")
	}
	bans := wt.w.List()
	if len(bans) != 1 || bans[0].Jail != "sshd" || bans[0].By != "guard" || len(bans[0].Evidence) != 3 || !strings.Contains(bans[0].Reason, "3 failed logins within 1m0s") {
		t.Fatalf("bans %+v", bans)
	}
	if got := wt.kernel.set[pfx("203.0.113.7/32")]; got != time.Minute {
		t.Errorf("kernel has %v for the ban, want 1m", got)
	}
	if _, kept := wt.ledger.bans[pfx("203.0.113.7/32")]; !kept {
		t.Error("the ledger does not keep the ban")
	}
	// A late line about a banned address changes nothing.
	wt.w.Fail(ctx, "sshd", addr, "late")
	if len(wt.kernel.log) != 1 {
		t.Errorf("kernel log %v", wt.kernel.log)
	}
	// Expiry: the kernel ends it by itself; the warden forgets it.
	wt.clock.add(time.Minute)
	wt.w.Expire(ctx)
	if wt.w.Banned(addr) || len(wt.w.List()) != 0 {
		t.Error("an expired ban is still in force")
	}
	if len(wt.ledger.bans) != 1 {
		t.Error("an expired ban is not kept as the address's history")
	}
	// The next ban of the same address is twice as long.
	for i := range 3 {
		wt.w.Fail(ctx, "sshd", addr, fmt.Sprintf("again %d", i))
	}
	if b := wt.w.List(); len(b) != 1 || b[0].Expires.Sub(b[0].At) != 2*time.Minute || b[0].Repeat != 1 {
		t.Errorf("second ban %+v, want 2m", b)
	}
	if !slices.Equal(wt.records, []string{"guard.ban 203.0.113.7/32", "guard.ban 203.0.113.7/32"}) {
		t.Errorf("activity %v", wt.records)
	}
}

func TestWardenOverlaps(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	hour := time.Hour
	mustBan := func(p string, d time.Duration) {
		t.Helper()
		if _, err := wt.w.Ban(ctx, pfx(p), d, "root", "", nil); err != nil {
			t.Fatal(err)
		}
	}
	mustBan("203.0.113.7/32", hour)
	mustBan("203.0.113.9/32", hour)
	// A prefix over them replaces them: the kernel refuses overlaps.
	mustBan("203.0.113.0/24", 2*hour)
	if got := wt.w.List(); len(got) != 1 || got[0].Prefix != pfx("203.0.113.0/24") {
		t.Fatalf("after a covering ban: %+v", got)
	}
	if len(wt.kernel.set) != 1 {
		t.Errorf("kernel %v", wt.kernel.set)
	}
	// An address inside a wider ban is banned already, even for longer;
	// the reply says so, and which ban holds it.
	if b, err := wt.w.Ban(ctx, pfx("203.0.113.50/32"), 5*hour, "root", "", nil); !errors.Is(err, ErrAlreadyBanned) || b.Prefix != pfx("203.0.113.0/24") || !strings.Contains(err.Error(), "inside the ban of 203.0.113.0/24") {
		t.Errorf("a ban inside a wider one: %+v, %v", b, err)
	}
	if got := wt.w.List(); len(got) != 1 {
		t.Errorf("a ban inside a longer one was added: %+v", got)
	}
	// Unbanning an address inside a wider ban names the wider one.
	if _, err := wt.w.Unban(ctx, pfx("203.0.113.7/32"), "root"); !errors.Is(err, ErrNotBanned) || !strings.Contains(err.Error(), "moat guard unban 203.0.113.0/24") {
		t.Errorf("unban inside a wider ban: %v", err)
	}
	// The same prefix again replaces the ban (a new length).
	mustBan("203.0.113.0/24", 0)
	if got := wt.w.List(); len(got) != 1 || !got[0].Expires.IsZero() || wt.kernel.set[pfx("203.0.113.0/24")] != 0 {
		t.Errorf("a ban until lifted did not replace the old one: %+v %v", got, wt.kernel.set)
	}
	// A wider ban over a longer one lasts as long.
	mustBan("198.51.100.7/32", 0)
	if b, err := wt.w.Ban(ctx, pfx("198.51.100.0/24"), hour, "root", "", nil); err != nil || !b.Expires.IsZero() {
		t.Errorf("the reply of a wider ban over one until lifted: %+v, %v", b, err)
	}
	got := wt.w.List()
	i := slices.IndexFunc(got, func(b Ban) bool { return b.Prefix == pfx("198.51.100.0/24") })
	if len(got) != 2 || i < 0 || !got[i].Expires.IsZero() {
		t.Errorf("a wider ban over one until lifted: %+v", got)
	}
	if _, err := wt.w.Unban(ctx, pfx("203.0.113.0/24"), "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := wt.w.Unban(ctx, pfx("203.0.113.0/24"), "root"); !errors.Is(err, ErrNotBanned) {
		t.Errorf("second unban: %v", err)
	}
	if len(wt.kernel.set) != 1 || wt.w.Banned(netip.MustParseAddr("203.0.113.1")) {
		t.Error("an unban left something behind")
	}
	// What is left in the ledger: the ban of 198.51.100.0/24, and the three
	// bans the /24s replaced, as history only.
	inForce := 0
	for _, b := range wt.ledger.bans {
		if b.Left(wt.clock.now()) != 0 {
			inForce++
		} else if b.Ended.IsZero() {
			t.Errorf("a kept ban neither in force nor ended: %+v", b)
		}
	}
	if inForce != 1 || len(wt.ledger.bans) != 4 {
		t.Errorf("ledger %+v: want one ban in force and three replaced", wt.ledger.bans)
	}
}

func TestWardenRefuses(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	wt.w.Configure(ctx, nil, []netip.Prefix{pfx("198.51.100.0/24")})
	me := netip.MustParseAddr("192.0.2.10")
	for _, p := range []string{"127.0.0.1/32", "::1/128", "127.0.0.0/8", "198.51.100.7/32", "198.51.0.0/16", "192.0.2.0/24", "::ffff:192.0.2.10/128"} {
		if _, err := wt.w.Ban(ctx, pfx(p), time.Hour, "root", "", []netip.Addr{me}); !errors.Is(err, ErrRefused) {
			t.Errorf("ban %s: %v, want a refusal", p, err)
		}
	}
	if len(wt.kernel.set) != 0 {
		t.Errorf("kernel %v", wt.kernel.set)
	}
}

func TestWardenIgnoreLiftsBans(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	if _, err := wt.w.Ban(ctx, pfx("198.51.100.7/32"), time.Hour, "root", "", nil); err != nil {
		t.Fatal(err)
	}
	wt.w.Configure(ctx, nil, []netip.Prefix{pfx("198.51.100.0/24")})
	if len(wt.w.List()) != 0 || len(wt.kernel.set) != 0 {
		t.Error("a ban of an address put on the ignore list stays")
	}
	if !slices.Contains(wt.records, "guard.unban 198.51.100.7/32") {
		t.Errorf("activity %v", wt.records)
	}
}

func TestWardenRestore(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	now := wt.clock.now()
	wt.ledger.bans[pfx("203.0.113.7/32")] = Ban{Prefix: pfx("203.0.113.7/32"), Jail: "sshd", At: now.Add(-time.Minute), Expires: now.Add(9 * time.Minute), Repeat: 2}
	wt.ledger.bans[pfx("203.0.113.8/32")] = Ban{Prefix: pfx("203.0.113.8/32"), Jail: "sshd", At: now.Add(-time.Hour), Expires: now.Add(-time.Minute)}
	wt.ledger.bans[pfx("2001:db8::/48")] = Ban{Prefix: pfx("2001:db8::/48"), Jail: "manual", At: now}
	if err := wt.w.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if !wt.w.Banned(netip.MustParseAddr("203.0.113.7")) || len(wt.kernel.set) != 0 {
		t.Error("Restore does not put the bans in the edge's check at once, or touches the kernel before the firewall is up")
	}
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: Policy{MaxRetry: 1, FindTime: time.Minute, BanTime: time.Minute, MaxBanTime: time.Hour}}}, nil)
	wt.w.Reenforce(ctx)
	if wt.kernel.set[pfx("203.0.113.7/32")] != 9*time.Minute {
		t.Errorf("restored with %v left, want 9m", wt.kernel.set[pfx("203.0.113.7/32")])
	}
	if d, ok := wt.kernel.set[pfx("2001:db8::/48")]; !ok || d != 0 {
		t.Errorf("a ban until lifted was not restored as such: %v %v", d, ok)
	}
	if _, ok := wt.kernel.set[pfx("203.0.113.8/32")]; ok {
		t.Error("an expired ban was put back")
	}
	if wt.w.Banned(netip.MustParseAddr("203.0.113.8")) {
		t.Error("an expired ban is in force")
	}
	if !wt.w.Banned(netip.MustParseAddr("2001:db8:0:ffff::1")) {
		t.Error("the edge's check misses a restored IPv6 prefix")
	}
	// The restored ban's history carries on: the next ban of the address
	// is its fourth, so 8 times BanTime.
	wt.clock.add(10 * time.Minute)
	wt.w.Expire(ctx)
	wt.w.Fail(ctx, "sshd", netip.MustParseAddr("203.0.113.7"), "again")
	if b := wt.w.List(); len(b) != 2 || b[0].Expires.Sub(b[0].At) != 8*time.Minute {
		t.Errorf("after the restore, the next ban: %+v, want 8m", b)
	}
}

func TestWardenStorm(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := wt.w.Ban(ctx, pfx(fmt.Sprintf("203.0.113.%d/32", i+1)), time.Hour, "root", "", nil); err != nil {
			t.Fatal(err)
		}
		wt.clock.add(time.Second)
	}
	select {
	case bans := <-wt.storms:
		if len(bans) != 3 {
			t.Fatalf("a storm of %d bans, want 3", len(bans))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no storm was told")
	}
	if len(wt.storms) != 0 {
		t.Fatal("a storm was told twice within a minute")
	}
	wt.clock.add(2 * time.Minute)
	for i := range 3 {
		wt.w.Ban(ctx, pfx(fmt.Sprintf("198.51.100.%d/32", i+1)), time.Hour, "root", "", nil)
	}
	select {
	case <-wt.storms:
	case <-time.After(5 * time.Second):
		t.Error("a second storm a minute later was not told")
	}
}

func TestWardenEnforcerFailureKeepsTheBan(t *testing.T) {
	wt := newWardenTest(t)
	wt.kernel.fail = true
	if _, err := wt.w.Ban(context.Background(), pfx("203.0.113.7/32"), time.Hour, "root", "", nil); err != nil {
		t.Fatal(err)
	}
	if !wt.w.Banned(netip.MustParseAddr("203.0.113.7")) || len(wt.ledger.bans) != 1 {
		t.Error("a ban the kernel refused is not kept for the edge and the next start")
	}
}

func TestSet(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s := NewSet(c.now)
	ctx := context.Background()
	s.Ban(ctx, pfx("203.0.113.7/32"), time.Minute)
	s.Ban(ctx, pfx("198.51.100.0/24"), 0)
	s.Ban(ctx, pfx("2001:db8:1::/64"), time.Hour)
	cases := []struct {
		addr string
		want bool
	}{
		{"203.0.113.7", true},
		{"::ffff:203.0.113.7", true},
		{"203.0.113.8", false},
		{"198.51.100.200", true},
		{"198.51.101.1", false},
		{"2001:db8:1::42", true},
		{"2001:db8:1:1::42", false},
		{"::203.0.113.7", false},
	}
	for _, tc := range cases {
		if got := s.Banned(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Banned(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	c.t = c.t.Add(time.Minute)
	if s.Banned(netip.MustParseAddr("203.0.113.7")) {
		t.Error("an expired ban still holds")
	}
	s.Unban(ctx, pfx("198.51.100.0/24"))
	if s.Banned(netip.MustParseAddr("198.51.100.1")) {
		t.Error("an unbanned prefix still holds")
	}
}

// TestFileSourceStartsAtTheEnd: a first start does not count the history
// already in the log; a restart resumes where the last run stopped.
func TestFileSourceStartsAtTheEnd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	old := "Failed password for root from 203.0.113.1 port 1 ssh2\n"
	if err := os.WriteFile(path, []byte(strings.Repeat(old, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	wt := newWardenTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	spec := JailSpec{Name: "sshd", Policy: Policy{MaxRetry: 2, FindTime: time.Hour, BanTime: time.Hour, MaxBanTime: time.Hour}, Filter: SSHD{}, Source: File{Path: path, Poll: 10 * time.Millisecond}}
	wt.w.Configure(ctx, []JailSpec{spec}, nil)
	appendLine := func(line string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(line + "\n")
		f.Close()
	}
	waitLines := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for wt.w.Stats().Lines["sshd"] < n {
			if time.Now().After(deadline) {
				t.Fatalf("lines read: %d, want %d", wt.w.Stats().Lines["sshd"], n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	appendLine("Failed password for root from 203.0.113.2 port 2 ssh2")
	waitLines(1)
	wt.w.Stop()
	cancel()
	if len(wt.w.List()) != 0 {
		t.Fatalf("banned from the history: %+v", wt.w.List())
	}
	// Lines written while moat is down are read after the restart.
	appendLine("Failed password for root from 203.0.113.2 port 3 ssh2")
	w2 := NewWarden(WardenOptions{Ledger: wt.ledger, Now: wt.clock.now})
	w2.Configure(context.Background(), []JailSpec{spec}, nil)
	defer w2.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for w2.Stats().Lines["sshd"] < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the line written while down was not read")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := w2.Stats().Lines["sshd"]; n != 1 {
		t.Errorf("after the restart %d lines were read, want 1 (no line twice, none of the history)", n)
	}
}

// fleet joins wardens as a fleet's shared store would: a ban published by
// one is adopted by the others, an unban withdrawn from all.
type fleet struct {
	wardens []*Warden
}

type member struct {
	f  *fleet
	me int
}

func (m member) Publish(ctx context.Context, b Ban) error {
	for i, w := range m.f.wardens {
		if i != m.me {
			if err := w.Adopt(ctx, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m member) Withdraw(ctx context.Context, p netip.Prefix) error {
	for i, w := range m.f.wardens {
		if i != m.me {
			if _, err := w.Release(ctx, p, "fleet"); err != nil && !errors.Is(err, ErrNotBanned) {
				return err
			}
		}
	}
	return nil
}

func TestWardenFleet(t *testing.T) {
	f := &fleet{}
	kernels := []*kernel{{}, {}}
	for i := range 2 {
		f.wardens = append(f.wardens, NewWarden(WardenOptions{Enforcers: []Enforcer{kernels[i]}, Peers: member{f, i}, Logger: slog.New(slog.DiscardHandler)}))
	}
	ctx := context.Background()
	if _, err := f.wardens[0].Ban(ctx, pfx("203.0.113.7/32"), time.Hour, "root", "", nil); err != nil {
		t.Fatal(err)
	}
	if !f.wardens[1].Banned(netip.MustParseAddr("203.0.113.7")) || len(kernels[1].set) != 1 {
		t.Error("the other node did not adopt the ban")
	}
	if _, err := f.wardens[1].Unban(ctx, pfx("203.0.113.7/32"), "root"); err != nil {
		t.Fatal(err)
	}
	if f.wardens[0].Banned(netip.MustParseAddr("203.0.113.7")) || len(kernels[0].set) != 0 {
		t.Error("the unban did not reach the first node")
	}
}

// TestWardenIPv6IgnoreHoldsForThePrefix: IPv6 failures count per /64; a
// /64 around an ignore-listed address is not banned for another
// address's failures.
func TestWardenIPv6IgnoreHoldsForThePrefix(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	policy := Policy{MaxRetry: 2, FindTime: time.Minute, BanTime: time.Minute, MaxBanTime: time.Hour, V6Prefix: 64}
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: policy}}, []netip.Prefix{pfx("2001:db8:1:2::abcd/128")})
	for range 2 {
		wt.w.Fail(ctx, "sshd", netip.MustParseAddr("2001:db8:1:2::bad"), "x")
		wt.w.Fail(ctx, "sshd", netip.MustParseAddr("2001:db8:9:9::bad"), "x")
	}
	if wt.w.Banned(netip.MustParseAddr("2001:db8:1:2::abcd")) {
		t.Error("the owner's ignore-listed address was banned with its /64")
	}
	if !wt.w.Banned(netip.MustParseAddr("2001:db8:9:9::1")) {
		t.Error("another /64 was not banned")
	}
}

// TestWardenMappedAddresses: IPv4-mapped prefixes are IPv4 bans, checked
// against the ignore list as such; a prefix around the mapped space is
// refused, from the fleet too.
func TestWardenMappedAddresses(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	wt.w.Configure(ctx, nil, []netip.Prefix{pfx("192.0.2.0/24")})
	if err := wt.w.Adopt(ctx, Ban{Prefix: pfx("::ffff:192.0.2.10/128"), At: wt.clock.now()}); !errors.Is(err, ErrRefused) {
		t.Errorf("adopting a mapped ignore-listed address: %v", err)
	}
	for _, p := range []string{"::ffff:0:0/96", "::fffe:0:0/95", "::/0"} {
		if _, err := wt.w.Ban(ctx, pfx(p), time.Hour, "root", "", nil); !errors.Is(err, ErrRefused) {
			t.Errorf("ban %s: %v, want a refusal", p, err)
		}
		if err := wt.w.Adopt(ctx, Ban{Prefix: pfx(p), At: wt.clock.now()}); !errors.Is(err, ErrRefused) {
			t.Errorf("adopt %s: %v, want a refusal", p, err)
		}
	}
	b, err := wt.w.Ban(ctx, pfx("::ffff:198.51.100.7/128"), time.Hour, "root", "", nil)
	if err != nil || b.Prefix != pfx("198.51.100.7/32") {
		t.Fatalf("a mapped ban: %+v, %v", b, err)
	}
	if _, err := wt.w.Unban(ctx, pfx("::ffff:198.51.100.7/128"), "root"); err != nil {
		t.Errorf("unban by the mapped prefix: %v", err)
	}
	if len(wt.kernel.set) != 0 {
		t.Errorf("kernel %v", wt.kernel.set)
	}
}

// TestWardenUnbanFailure: a ban the kernel cannot lift stays, and the
// unban says why.
func TestWardenUnbanFailure(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	if _, err := wt.w.Ban(ctx, pfx("203.0.113.7/32"), 0, "root", "", nil); err != nil {
		t.Fatal(err)
	}
	wt.kernel.failUnbans = true
	if _, err := wt.w.Unban(ctx, pfx("203.0.113.7/32"), "root"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("unban with the kernel failing: %v", err)
	}
	if len(wt.w.List()) != 1 || len(wt.ledger.bans) != 1 {
		t.Error("a ban the kernel still holds is no longer listed or kept")
	}
}

// TestWardenDecisionOutlivesItsSource: a ban decided as its jail is
// replaced (a reload cancels the source's context) is still kept.
func TestWardenDecisionOutlivesItsSource(t *testing.T) {
	wt := newWardenTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wt.w.Configure(context.Background(), []JailSpec{{Name: "sshd", Policy: Policy{MaxRetry: 1, FindTime: time.Minute, BanTime: time.Minute, MaxBanTime: time.Hour}}}, nil)
	wt.w.Fail(ctx, "sshd", netip.MustParseAddr("203.0.113.7"), "x")
	if len(wt.ledger.bans) != 1 || len(wt.kernel.set) != 1 {
		t.Error("a ban decided with a cancelled context was lost")
	}
}

// TestWardenHistorySurvivesReconfiguring: changing the ignore list or a
// jail's policy builds new detectors, which still know who was banned.
func TestWardenHistorySurvivesReconfiguring(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	policy := Policy{MaxRetry: 1, FindTime: time.Minute, BanTime: time.Minute, MaxBanTime: time.Hour}
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: policy}}, nil)
	addr := netip.MustParseAddr("203.0.113.7")
	wt.w.Fail(ctx, "sshd", addr, "x")
	wt.clock.add(2 * time.Minute)
	wt.w.Expire(ctx)
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: policy}}, []netip.Prefix{pfx("198.51.100.0/24")})
	wt.w.Fail(ctx, "sshd", addr, "y")
	if b := wt.w.List(); len(b) != 1 || b[0].Repeat != 1 || b[0].Expires.Sub(b[0].At) != 2*time.Minute {
		t.Errorf("after reconfiguring, the second ban: %+v, want the repeat of 2m", b)
	}
	// The history is forgotten a MaxBanTime (at least a week) after the
	// last ban ended.
	wt.clock.add(8 * 24 * time.Hour)
	wt.w.Expire(ctx)
	if len(wt.ledger.bans) != 0 {
		t.Errorf("history kept past its time: %v", wt.ledger.bans)
	}
}

// TestSetFamilies: an IPv6 prefix never holds an IPv4 client.
func TestSetFamilies(t *testing.T) {
	s := NewSet(nil)
	ctx := context.Background()
	s.Ban(ctx, pfx("::fffe:0:0/95"), 0)
	s.Ban(ctx, pfx("::/0"), 0)
	if s.Banned(netip.MustParseAddr("203.0.113.7")) || s.Banned(netip.MustParseAddr("::ffff:203.0.113.7")) {
		t.Error("an IPv6 prefix holds an IPv4 client")
	}
	s.Ban(ctx, pfx("::ffff:203.0.113.0/120"), 0)
	if !s.Banned(netip.MustParseAddr("203.0.113.7")) {
		t.Error("a mapped prefix does not hold its IPv4 clients")
	}
	// The clean-up every 64 entries keeps what is in force.
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s = NewSet(c.now)
	for i := range 63 {
		s.Ban(ctx, pfx(fmt.Sprintf("198.51.100.%d/32", i)), time.Second)
	}
	c.add(2 * time.Second)
	s.Ban(ctx, pfx("203.0.113.9/32"), time.Hour)
	if len(s.entries) != 1 || !s.Banned(netip.MustParseAddr("203.0.113.9")) || s.Banned(netip.MustParseAddr("198.51.100.1")) {
		t.Errorf("after the clean-up: %d entries", len(s.entries))
	}
}

// bulkKernel is a kernel that takes bans at once too.
type bulkKernel struct {
	kernel
	calls int
}

func (k *bulkKernel) BanAll(ctx context.Context, bans []Ban, now time.Time) error {
	k.mu.Lock()
	k.calls++
	k.mu.Unlock()
	for _, b := range bans {
		if err := k.Ban(ctx, b.Prefix, max(b.Left(now), 0)); err != nil {
			return err
		}
	}
	return nil
}

// TestWardenRestoreAndReenforce: rows moat would not make now are dropped,
// a ban inside a wider one is history only, and the kernel gets what is in
// force in one go, never a ban that ran out (which would be one until
// lifted to it).
func TestWardenRestoreAndReenforce(t *testing.T) {
	ledger, k := newMemLedger(), &bulkKernel{}
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	w := NewWarden(WardenOptions{Ledger: ledger, Enforcers: []Enforcer{k}, Now: c.now, Logger: slog.New(slog.DiscardHandler)})
	now := c.now()
	for _, b := range []Ban{
		{Prefix: pfx("::ffff:192.0.2.10/128"), At: now, Expires: now.Add(time.Hour)},
		{Prefix: pfx("::fffe:0:0/95"), At: now, Expires: now.Add(time.Hour)},
		{Prefix: pfx("203.0.113.0/24"), At: now, Expires: now.Add(time.Hour)},
		{Prefix: pfx("203.0.113.7/32"), At: now, Expires: now.Add(time.Hour)},
		{Prefix: pfx("198.51.100.7/32"), At: now, Expires: now.Add(time.Hour), Ended: now},
		{Prefix: pfx("198.51.100.8/32"), At: now.Add(-time.Hour), Expires: now.Add(time.Millisecond)},
	} {
		ledger.bans[b.Prefix] = b
	}
	if err := w.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := ledger.bans[pfx("::ffff:192.0.2.10/128")]; ok {
		t.Error("a mapped row was kept")
	}
	if _, ok := ledger.bans[pfx("::fffe:0:0/95")]; ok {
		t.Error("a row around the mapped space was kept")
	}
	got := w.List()
	if len(got) != 2 {
		t.Fatalf("in force after Restore: %+v, want the /24 and 198.51.100.8", got)
	}
	c.add(time.Second) // 198.51.100.8 runs out between List and the kernel
	w.Reenforce(context.Background())
	if k.calls != 1 || len(k.set) != 1 || k.set[pfx("203.0.113.0/24")] != time.Hour-time.Second {
		t.Errorf("the kernel got %v in %d calls, want the /24 alone, in one", k.set, k.calls)
	}
}

// TestWardenForgivesAndRemembers: a ban lifted by hand is forgiven (the
// next one is not longer); a ban of the longest length is still
// remembered when it ends.
func TestWardenForgivesAndRemembers(t *testing.T) {
	wt := newWardenTest(t)
	ctx := context.Background()
	policy := Policy{MaxRetry: 1, FindTime: time.Minute, BanTime: 10 * time.Minute, MaxBanTime: 20 * time.Minute}
	wt.w.Configure(ctx, []JailSpec{{Name: "sshd", Policy: policy}}, nil)
	addr := netip.MustParseAddr("203.0.113.7")
	length := func() time.Duration {
		t.Helper()
		wt.w.Fail(ctx, "sshd", addr, "x")
		b := wt.w.List()
		if len(b) != 1 {
			t.Fatalf("bans %+v", b)
		}
		return b[0].Expires.Sub(b[0].At)
	}
	if d := length(); d != 10*time.Minute {
		t.Fatalf("first ban %s", d)
	}
	if _, err := wt.w.Unban(ctx, pfx("203.0.113.7/32"), "root"); err != nil {
		t.Fatal(err)
	}
	if d := length(); d != 10*time.Minute {
		t.Errorf("after an unban by hand, the next ban lasts %s, want 10m (forgiven)", d)
	}
	var got []time.Duration
	for range 3 {
		wt.clock.add(25 * time.Minute) // past the ban, and past the detector's window
		wt.w.Expire(ctx)
		got = append(got, length())
	}
	if !slices.Equal(got, []time.Duration{20 * time.Minute, 20 * time.Minute, 20 * time.Minute}) {
		t.Errorf("repeat bans %v, want 20m each: a ban of the longest length is still remembered when it ends", got)
	}
}
