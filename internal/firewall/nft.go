package firewall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// NFT runs the nft command: on the host, or inside a network namespace
// (tests).
type NFT struct {
	Path  string // the nft binary; "nft" when empty
	Netns string // when set, run inside this namespace (ip netns exec)
}

// run runs nft with args, stdin as its input, and returns its output; an
// error carries what nft said.
func (n NFT) run(ctx context.Context, stdin string, args ...string) (string, error) {
	path := n.Path
	if path == "" {
		path = "nft"
	}
	name, argv := path, args
	if n.Netns != "" {
		name, argv = "ip", append([]string{"netns", "exec", n.Netns, path}, args...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), fmt.Errorf("nft %s: %s", strings.Join(args, " "), msg)
	}
	return out.String(), nil
}

// Manager applies rules and bans to the kernel, one change at a time.
type Manager struct {
	nft NFT

	mu      sync.Mutex
	pending *pending // an apply waiting for its confirmation
	inForce []Rule   // what this Manager last put in force
	known   bool     // inForce is known: this Manager applied or removed the table
	applied []string // the table as the kernel listed it after that apply, bans left out
}

// pending is an applied ruleset that rolls back unless confirmed.
type pending struct {
	previous []Rule // nil: there was no table
	hadTable bool
	timer    *time.Timer
	done     chan struct{}
	err      error // the rollback's outcome, once done is closed
	deadline time.Time
}

// NewManager returns a Manager that runs nft as n says.
func NewManager(n NFT) *Manager { return &Manager{nft: n} }

// Apply replaces moat's table with one for rules, keeping the bans in
// force with the time they have left. It is one transaction: on any error
// the kernel keeps the previous ruleset whole.
//
// A change waiting for its confirmation is superseded: what Apply puts in
// force stays, and its rollback no longer happens.
func (m *Manager) Apply(ctx context.Context, rules []Rule) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.apply(ctx, rules); err != nil {
		return err
	}
	m.dropPending()
	return nil
}

// dropPending forgets a change waiting for its confirmation, as a later
// Apply or Off supersedes it.
func (m *Manager) dropPending() {
	if m.pending != nil {
		m.pending.timer.Stop()
		m.pending = nil
	}
}

func (m *Manager) apply(ctx context.Context, rules []Rule) error {
	if err := Check(rules); err != nil {
		return err
	}
	bans, err := m.bans(ctx)
	if err != nil {
		return err
	}
	if _, err := m.nft.run(ctx, Render(rules, bans), "-f", "-"); err != nil {
		return fmt.Errorf("firewall: applying the ruleset: %w", err)
	}
	m.inForce, m.known = append([]Rule(nil), rules...), true
	// What the kernel made of it, to tell drift by later; without it
	// there is only no drift to tell.
	m.applied = nil
	if out, err := m.nft.run(ctx, "", "list", "table", "inet", Table); err == nil {
		m.applied = tableLines(out)
	}
	return nil
}

// Drift compares moat's table in the kernel with what this Manager last
// applied: the lines added (by hand, or another tool) and removed since,
// as nft lists them, and the elements of the ban sets that are none of
// bans (the guard's, which come and go by themselves). known is false
// when there is nothing to compare with: the Manager applied nothing, or
// removed the table.
func (m *Manager) Drift(ctx context.Context, bans []netip.Prefix) (drift []string, known bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied == nil {
		return nil, false, nil
	}
	out, err := m.nft.run(ctx, "", "list", "table", "inet", Table)
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") {
			return []string{"moat's table is gone from the kernel"}, true, nil
		}
		return nil, false, fmt.Errorf("firewall: reading the table back: %w", err)
	}
	drift = lineDiff(m.applied, tableLines(out))
	inKernel, err := m.bans(ctx)
	if err != nil {
		return drift, true, err
	}
	for _, b := range inKernel {
		if !slices.Contains(bans, b.Prefix) {
			drift = append(drift, "added: "+b.Prefix.String()+" in the ban set, not one of the guard's bans")
		}
	}
	return drift, true, nil
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// tableLines are nft's listing of a table, a line each, trimmed, with
// the sets' elements (the bans, which come and go) and the counters'
// values left out.
func tableLines(out string) []string {
	var lines []string
	inElements := false
	for line := range strings.Lines(out) {
		l := strings.TrimSpace(line)
		switch {
		case inElements:
			inElements = !strings.HasSuffix(l, "}")
			continue
		case strings.HasPrefix(l, "elements = {"):
			inElements = !strings.HasSuffix(l, "}")
			continue
		case l == "":
			continue
		}
		lines = append(lines, counters.ReplaceAllString(l, "counter"))
	}
	return lines
}

// lineDiff is what now has that was did not (added: …) and the other way
// (removed: …), each line counted as often as it comes.
func lineDiff(was, now []string) []string {
	count := map[string]int{}
	for _, l := range was {
		count[l]++
	}
	var out []string
	for _, l := range now {
		if count[l] > 0 {
			count[l]--
			continue
		}
		out = append(out, "added: "+l)
	}
	for _, l := range was {
		if count[l] > 0 {
			count[l]--
			out = append(out, "removed: "+l)
		}
	}
	return out
}

// InForce returns the rules this Manager last put in force; nil with
// known when it removed the table, and known false before it did
// anything (what is in the kernel then is not its doing).
func (m *Manager) InForce() (rules []Rule, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Rule(nil), m.inForce...), m.known
}

// remove deletes moat's table.
func (m *Manager) remove(ctx context.Context) error {
	if _, err := m.nft.run(ctx, fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", Table, Table), "-f", "-"); err != nil {
		return fmt.Errorf("firewall: removing the table: %w", err)
	}
	m.inForce, m.known, m.applied = nil, true, nil
	return nil
}

// Off removes moat's table: the server is then open to whatever the other
// tables allow. The bans go with it.
func (m *Manager) Off(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.remove(ctx); err != nil {
		return err
	}
	m.dropPending()
	return nil
}

// Active reports whether moat's table is in the kernel.
func (m *Manager) Active(ctx context.Context) (bool, error) {
	out, err := m.nft.run(ctx, "", "list", "tables", "inet")
	if err != nil {
		return false, err
	}
	return tableListed(out), nil
}

func tableListed(out string) bool {
	for line := range strings.Lines(out) {
		if strings.TrimSpace(line) == "table inet "+Table {
			return true
		}
	}
	return false
}

// Ban adds a ban for prefix, expiring after d (0: until removed). The
// table must be in force.
func (m *Manager) Ban(ctx context.Context, prefix netip.Prefix, d time.Duration) error {
	return m.Load(ctx, []Ban{{Prefix: prefix, Expires: d}})
}

// Load adds many bans in one transaction, replacing any element of the
// same prefix (and its timeout).
func (m *Manager) Load(ctx context.Context, bans []Ban) error {
	var b strings.Builder
	for _, ban := range bans {
		p := ban.Prefix.Masked()
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		set := "ban6"
		if p.Addr().Is4() {
			set = "ban4"
		}
		// An element that is there already keeps its old timeout on
		// older kernels (and a re-add without one is ignored), so it is
		// made sure of, taken out and added anew: add, delete, add, in
		// the one transaction.
		fmt.Fprintf(&b, "add element inet %s %s { %s }\n", Table, set, p)
		fmt.Fprintf(&b, "delete element inet %s %s { %s }\n", Table, set, p)
		fmt.Fprintf(&b, "add element inet %s %s { %s", Table, set, p)
		if ban.Expires > 0 {
			fmt.Fprintf(&b, " timeout %dms", max(ban.Expires.Milliseconds(), 1000))
		}
		b.WriteString(" }\n")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.nft.run(ctx, b.String(), "-f", "-"); err != nil {
		return fmt.Errorf("firewall: adding bans: %w", err)
	}
	return nil
}

// Unban removes the ban of exactly prefix.
func (m *Manager) Unban(ctx context.Context, prefix netip.Prefix) error {
	set := "ban6"
	if prefix.Addr().Is4In6() {
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), max(prefix.Bits()-96, 0))
	}
	if prefix.Addr().Is4() {
		set = "ban4"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	script := fmt.Sprintf("delete element inet %s %s { %s }\n", Table, set, prefix.Masked())
	if _, err := m.nft.run(ctx, script, "-f", "-"); err != nil {
		return fmt.Errorf("firewall: removing the ban of %s: %w", prefix, err)
	}
	return nil
}

// Bans lists the bans in force with the time they have left.
func (m *Manager) Bans(ctx context.Context) ([]Ban, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bans(ctx)
}

func (m *Manager) bans(ctx context.Context) ([]Ban, error) {
	out, err := m.nft.run(ctx, "", "list", "tables", "inet")
	if err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	if !tableListed(out) {
		return nil, nil
	}
	var bans []Ban
	for _, set := range []string{"ban4", "ban6"} {
		out, err := m.nft.run(ctx, "", "-j", "list", "set", "inet", Table, set)
		if err != nil {
			return nil, fmt.Errorf("firewall: reading the bans: %w", err)
		}
		got, err := parseSet(out)
		if err != nil {
			return nil, fmt.Errorf("firewall: reading the bans: %w", err)
		}
		bans = append(bans, got...)
	}
	return bans, nil
}

// parseSet reads the elements of `nft -j list set`.
func parseSet(out string) ([]Ban, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, err
	}
	var bans []Ban
	for _, item := range doc.Nftables {
		if item.Set == nil {
			continue
		}
		for _, raw := range item.Set.Elem {
			b, err := parseElem(raw)
			if err != nil {
				return nil, err
			}
			if b.Prefix.IsValid() {
				bans = append(bans, b) // a range someone added by hand has no prefix: not moat's, not kept
			}
		}
	}
	return bans, nil
}

// parseElem reads one set element: "1.2.3.4", {"prefix": …}, or
// {"elem": {"val": …, "expires": seconds}}.
func parseElem(raw json.RawMessage) (Ban, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Ban{}, err
		}
		return Ban{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	var obj struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range []string `json:"range"`
		Elem  *struct {
			Val     json.RawMessage `json:"val"`
			Timeout float64         `json:"timeout"`
			Expires float64         `json:"expires"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Ban{}, err
	}
	switch {
	case obj.Elem != nil:
		b, err := parseElem(obj.Elem.Val)
		b.Expires = time.Duration(obj.Elem.Expires * float64(time.Second))
		if obj.Elem.Timeout > 0 && b.Expires < time.Second {
			b.Expires = time.Second // nft counts in whole seconds: in its last one, a ban must not turn permanent
		}
		return b, err
	case obj.Range != nil:
		return Ban{}, nil
	case obj.Prefix != nil:
		a, err := netip.ParseAddr(obj.Prefix.Addr)
		if err != nil {
			return Ban{}, err
		}
		return Ban{Prefix: netip.PrefixFrom(a, obj.Prefix.Len)}, nil
	}
	return Ban{}, errors.New("unknown set element " + string(raw))
}

// ErrNothingToConfirm is Confirm's answer when no apply waits for it.
var ErrNothingToConfirm = errors.New("firewall: no change is waiting for confirmation")

// ApplyConfirm applies next like Apply, then, unless Confirm comes within
// d, puts back what was in force before: previous if wasActive, no table
// at all otherwise. (The caller passes the previous rules: it keeps the
// desired state.) done, if not nil, is told the rollback's outcome when
// one happens.
//
// A change that could cut the owner off is applied this way, so that the
// server comes back by itself when the owner's connection was cut.
func (m *Manager) ApplyConfirm(ctx context.Context, next, previous []Rule, wasActive bool, d time.Duration, done func(error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending != nil {
		return errors.New("firewall: another change is waiting for confirmation; confirm it, or wait until it rolls back")
	}
	if wasActive {
		if err := Check(previous); err != nil {
			return fmt.Errorf("firewall: the rules to fall back to are not valid: %w", err)
		}
	}
	if err := m.apply(ctx, next); err != nil {
		return err
	}
	p := &pending{previous: previous, hadTable: wasActive, done: make(chan struct{}), deadline: time.Now().Add(d)}
	p.timer = time.AfterFunc(d, func() { m.rollback(p, done) })
	m.pending = p
	return nil
}

// rollback restores what was in force before p's apply, unless p was
// confirmed meanwhile.
func (m *Manager) rollback(p *pending, done func(error)) {
	m.mu.Lock()
	if m.pending != p {
		m.mu.Unlock()
		return // confirmed
	}
	m.pending = nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if p.hadTable && len(p.previous) > 0 {
		err = m.apply(ctx, p.previous)
		if err != nil {
			// The old rules cannot be put back: open up rather than stay
			// locked behind the unconfirmed ones.
			if rerr := m.remove(ctx); rerr == nil {
				err = fmt.Errorf("%w; moat's table was removed instead, so the server is open to what other firewall rules allow", err)
			}
		}
	} else {
		err = m.remove(ctx) // there was no table, or no rule to put back (which would drop everything)
	}
	p.err = err
	close(p.done)
	m.mu.Unlock()
	if done != nil {
		done(err)
	}
}

// Confirm keeps the change ApplyConfirm made.
func (m *Manager) Confirm() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil {
		return ErrNothingToConfirm
	}
	m.pending.timer.Stop()
	m.pending = nil
	return nil
}

// Pending reports whether a change waits for its confirmation, and when
// it rolls back without one.
func (m *Manager) Pending() (deadline time.Time, pending bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil {
		return time.Time{}, false
	}
	return m.pending.deadline, true
}

// InForce is what was put in force: the rules, or no table at all (Off).
// The daemon keeps it (under the store name StoreName), so that a restart
// puts back what was in force, not rules that were applied and rolled
// back for want of a confirmation.
type InForce struct {
	Off   bool   `json:"off,omitempty"`
	Rules []Rule `json:"rules,omitempty"`
}

// StoreName is the name InForce is kept under.
const StoreName = "firewall"
