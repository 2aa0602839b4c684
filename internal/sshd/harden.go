package sshd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file hardens sshd: a drop-in with the settings every hardening
// guide starts with, put in force only when some user keeps a way in,
// and taken back by itself unless confirmed from a new session.

// Setting is a recommended sshd setting and why.
type Setting struct {
	Keyword, Value, Why string
}

// Recommended are the settings moat ssh harden puts in force.
var Recommended = []Setting{
	{"PasswordAuthentication", "no", "passwords can be guessed by the bots that try every server; keys cannot"},
	{"KbdInteractiveAuthentication", "no", "it asks for a password too, through PAM"},
	{"PermitRootLogin", "prohibit-password", "root, the account every bot tries, logs in by key only"},
	{"PubkeyAuthentication", "yes", "keys are how you log in"},
	{"MaxAuthTries", "3", "a client gets 3 tries per connection, not 6"},
	{"LoginGraceTime", "30", "a client that does not log in within 30 s is dropped, not after 2 minutes"},
	{"X11Forwarding", "no", "a server needs no X11, and forwarding it exposes your desktop to the server"},
}

// hardenDropIn is moat's hardening drop-in: sshd takes the first value it
// reads, and reads drop-ins in name order, so it sorts before the usual
// 50-cloud-init.conf (which turns passwords on).
const hardenDropIn = "00-moat-hardening.conf"

// effectiveValue is how sshd -T writes a value it takes.
func effectiveValue(keyword, value string) string {
	if strings.EqualFold(keyword, "PermitRootLogin") && value == "prohibit-password" {
		return "without-password"
	}
	return strings.ToLower(value)
}

// compliant reports whether sshd's effective value of keyword (as sshd
// -T writes it) is the recommended one or stricter: the owner's own
// PermitRootLogin no or MaxAuthTries 2 is never loosened.
func compliant(keyword, have string) bool {
	n, err := strconv.Atoi(have)
	switch strings.ToLower(keyword) {
	case "permitrootlogin":
		return have == "without-password" || have == "prohibit-password" || have == "no" || have == "forced-commands-only"
	case "maxauthtries":
		return err == nil && n >= 1 && n <= 3
	case "logingracetime":
		return err == nil && n >= 1 && n <= 30 // 0 is no limit
	}
	for _, s := range Recommended {
		if strings.EqualFold(s.Keyword, keyword) {
			return have == effectiveValue(s.Keyword, s.Value)
		}
	}
	return false
}

// hardenContent is the drop-in: the recommended settings but those in
// force now with a stricter value (strict, the owner's: the drop-in is
// read first, and would win), and the ports sshd listens on when they
// move (sshd listens on every Port line it reads).
func hardenContent(ports []int, strict map[string]bool) []byte {
	var b strings.Builder
	b.WriteString("# Written by moat ssh harden: change it with moat, not here.\n")
	for _, s := range Recommended {
		if !strict[strings.ToLower(s.Keyword)] {
			fmt.Fprintf(&b, "%s %s\n", s.Keyword, s.Value)
		}
	}
	for _, p := range ports {
		fmt.Fprintf(&b, "Port %d\n", p)
	}
	return []byte(b.String())
}

// HardenOptions are how a hardening is tried.
type HardenOptions struct {
	// Window is how long the new settings wait for Confirm; 0 keeps them
	// at once.
	Window time.Duration
	// Port, when set, moves sshd there: during the window it listens on
	// its old ports too, so that a session on them can still confirm;
	// Confirm leaves the new one alone.
	Port int
}

func (m *Manager) passwd() string {
	if m.Paths.Passwd != "" {
		return m.Paths.Passwd
	}
	return "/etc/passwd"
}

func (m *Manager) group() string {
	if m.Paths.Group != "" {
		return m.Paths.Group
	}
	return "/etc/group"
}

func (m *Manager) shadow() string {
	if m.Paths.Shadow != "" {
		return m.Paths.Shadow
	}
	return "/etc/shadow"
}

// pendingHarden is a hardening on trial: what the drop-in held before
// (nil: there was none), and the timer that puts it back.
type pendingHarden struct {
	previous []byte
	timer    *time.Timer
	// final is the drop-in Confirm writes when it differs from the one
	// on trial (a port change drops the old ports).
	final []byte
}

// hardening is the Manager's state of a hardening on trial.
type hardening struct {
	mu      sync.Mutex
	pending *pendingHarden
	stopped bool // Stop was called: no new trial
}

// Harden puts the recommended settings in force, after CheckAccess. sshd
// checks them (sshd -t) and they are read back (sshd -T) before it
// reloads; a setting that does not take (set earlier in sshd_config, say)
// is refused with the reason and nothing changes. With a window, the
// previous drop-in comes back by itself, and sshd reloads, unless Confirm
// comes first; done hears how that went. It returns who keeps a way in,
// and the ports sshd listened on before.
func (m *Manager) Harden(ctx context.Context, o HardenOptions, done func(error)) (Access, []int, error) {
	a, err := m.CheckAccess(ctx, nil)
	if err != nil {
		return a, nil, fmt.Errorf("refusing to turn password login off: %w", err)
	}
	if o.Port < 0 || o.Port > 65535 {
		return a, nil, fmt.Errorf("port %d is not a port from 1 to 65535", o.Port)
	}
	eff, err := m.Effective(ctx, "root")
	if err != nil {
		return a, nil, err
	}
	var old []int
	for _, v := range eff.Values("port") {
		var p int
		if _, err := fmt.Sscan(v, &p); err == nil {
			old = append(old, p)
		}
	}
	if o.Port != 0 {
		// sshd listens on every Port line it reads: moat can move it
		// only when its own drop-in holds the only ones.
		if where := m.portLines(); len(where) > 0 {
			return a, old, fmt.Errorf("sshd's port is set in %s, and sshd listens on every Port line it reads, so moat cannot move it: remove those Port lines and harden with the port again (moat keeps the old port open until you confirm the move): %w", strings.Join(where, ", "), ErrNotTaken)
		}
	}
	if o.Port != 0 && m.socketActivated(ctx) {
		return a, old, fmt.Errorf("sshd is started by ssh.socket (as on Ubuntu 22.10 and later), which holds its port whatever sshd_config says: change ListenStream in ssh.socket, or run sshd from ssh.service (systemctl disable --now ssh.socket && systemctl enable --now ssh.service), then move the port: %w", ErrNotTaken)
	}
	m.harden.mu.Lock()
	defer m.harden.mu.Unlock()
	if m.harden.stopped {
		return a, old, errors.New("sshd: moat is stopping; harden again once it runs")
	}
	// What to go back to is read under the lock, so that a rollback
	// running now is either done or not begun. A hardening on trial goes
	// back to what it replaced, and stays on trial until the new one is
	// in place.
	previous, err := m.HardenDropIn()
	if err != nil {
		return a, old, err
	}
	if m.harden.pending != nil {
		previous = m.harden.pending.previous
	}
	var trial, final []int
	switch {
	case o.Port != 0:
		final = []int{o.Port}
		trial = append([]int{o.Port}, old...)
		if o.Window == 0 {
			trial = final
		}
	default:
		// A port moved before stays where it is.
		now, _ := m.HardenDropIn()
		trial = portsIn(now)
	}
	// Stricter values in force now are the owner's; moat writes only
	// what makes sshd at least as strict as it recommends.
	strict := map[string]bool{}
	for _, s := range Recommended {
		k := strings.ToLower(s.Keyword)
		if have := eff.Value(k); compliant(k, have) && have != effectiveValue(s.Keyword, s.Value) {
			strict[k] = true
		}
	}
	err = m.changeDropIn(ctx, hardenDropIn, hardenContent(dedupe(trial), strict), func(eff Effective) error {
		var missed []string
		for _, s := range Recommended {
			if got := eff.Value(strings.ToLower(s.Keyword)); !compliant(s.Keyword, got) {
				missed = append(missed, fmt.Sprintf("%s is %s", s.Keyword, got))
			}
		}
		if o.Port != 0 && !slices.Contains(eff.Values("port"), fmt.Sprint(o.Port)) {
			missed = append(missed, fmt.Sprintf("Port is %s", strings.Join(eff.Values("port"), " ")))
		}
		overrides, err := m.matchOverrides(ctx, eff)
		if err != nil {
			return err
		}
		for _, f := range overrides {
			if f.Keyword == "PasswordAuthentication" || f.Keyword == "KbdInteractiveAuthentication" {
				missed = append(missed, fmt.Sprintf("%s is %s for %s (a Match block)", f.Keyword, f.Have, f.For))
			}
		}
		if len(missed) > 0 {
			return fmt.Errorf("sshd does not take moat's hardening: %s, set before moat's drop-in is read (in %s, or a drop-in that sorts before %s); remove those lines and harden again: %w",
				strings.Join(missed, ", "), m.Paths.Config, hardenDropIn, ErrNotTaken)
		}
		return nil
	})
	if err != nil {
		return a, old, err
	}
	if m.harden.pending != nil {
		m.harden.pending.timer.Stop()
		m.harden.pending = nil
	}
	if o.Window > 0 {
		p := &pendingHarden{previous: previous}
		if o.Port != 0 {
			p.final = hardenContent(final, strict)
		}
		p.timer = time.AfterFunc(o.Window, func() { m.rollback(p, done) })
		m.harden.pending = p
	}
	return a, old, nil
}

// dedupe drops repeated ports, keeping the order.
func dedupe(ports []int) []int {
	var out []int
	for _, p := range ports {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// rollback puts back the drop-in p replaced, unless p was confirmed or
// replaced. It holds the lock throughout, so that a hardening begun now
// waits and then sees what the rollback left; done is told under it too.
// A rollback that fails is tried again a minute later.
func (m *Manager) rollback(p *pendingHarden, done func(error)) {
	m.harden.mu.Lock()
	defer m.harden.mu.Unlock()
	if m.harden.pending != p {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := m.Restore(ctx, p.previous)
	if err != nil {
		p.timer = time.AfterFunc(time.Minute, func() { m.rollback(p, done) })
	} else {
		m.harden.pending = nil
	}
	if done != nil {
		done(err)
	}
}

// Restore puts the hardening drop-in back to previous (nil: none) and
// has sshd reload.
func (m *Manager) Restore(ctx context.Context, previous []byte) error {
	path := filepath.Join(m.Paths.DropInDir, hardenDropIn)
	if previous == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sshd: %w", err)
		}
		if err := m.Test(ctx); err != nil {
			return err
		}
		return m.reload(ctx)
	}
	return m.changeDropIn(ctx, hardenDropIn, previous, nil)
}

// Confirm keeps the hardening on trial; after a port change, sshd stops
// listening on the old ports.
func (m *Manager) Confirm(ctx context.Context) error {
	m.harden.mu.Lock()
	defer m.harden.mu.Unlock()
	p := m.harden.pending
	if p == nil {
		return errors.New("no hardening waits for a confirmation: it was rolled back, or confirmed already (moat activity shows which); moat ssh audit shows the settings in force")
	}
	p.timer.Stop()
	m.harden.pending = nil
	if p.final != nil {
		if err := m.changeDropIn(ctx, hardenDropIn, p.final, nil); err != nil {
			return fmt.Errorf("the hardening stays, but sshd still listens on its old ports too: %w", err)
		}
	}
	return nil
}

// Stop rolls back a hardening on trial, as moat stops (nobody would be
// left to), and refuses new trials. It reports whether there was one.
// A rollback that fails leaves the trial, for the next start to try.
func (m *Manager) Stop(ctx context.Context) (bool, error) {
	m.harden.mu.Lock()
	defer m.harden.mu.Unlock()
	m.harden.stopped = true
	p := m.harden.pending
	if p == nil {
		return false, nil
	}
	p.timer.Stop()
	if err := m.Restore(ctx, p.previous); err != nil {
		return true, err
	}
	m.harden.pending = nil
	return true, nil
}

// socketActivated reports whether systemd's ssh.socket holds sshd's
// ports.
func (m *Manager) socketActivated(ctx context.Context) bool {
	if m.SocketActivated != nil {
		return m.SocketActivated(ctx)
	}
	return exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", "ssh.socket").Run() == nil
}

// Pending reports whether a hardening waits for its confirmation, and
// what the drop-in held before it (nil: none).
func (m *Manager) Pending() (bool, []byte) {
	m.harden.mu.Lock()
	defer m.harden.mu.Unlock()
	if m.harden.pending == nil {
		return false, nil
	}
	return true, m.harden.pending.previous
}

// Finding is one difference between sshd's effective settings and the
// recommended ones.
type Finding struct {
	Keyword string `json:"keyword"`
	// For names the user a Match block sets it for; empty for everyone.
	For  string `json:"for,omitempty"`
	Have string `json:"have"`
	Want string `json:"want"`
	Why  string `json:"why"`
	Fix  string `json:"fix"`
}

// Audit compares sshd's effective settings (sshd -T) with the
// recommended ones.
func (m *Manager) Audit(ctx context.Context) ([]Finding, error) {
	eff, err := m.Effective(ctx, "root")
	if err != nil {
		return nil, err
	}
	var out []Finding
	for _, s := range Recommended {
		have := eff.Value(strings.ToLower(s.Keyword))
		if compliant(s.Keyword, have) {
			continue
		}
		out = append(out, Finding{Keyword: s.Keyword, Have: have, Want: s.Value, Why: s.Why,
			Fix: "moat ssh harden (it checks first that someone keeps a way in); if the setting stays, remove the " + s.Keyword + " line from " + m.Paths.Config + " or from a drop-in that sorts before " + hardenDropIn})
	}
	more, err := m.matchOverrides(ctx, eff)
	return append(out, more...), err
}

// matchOverrides finds the settings a Match block gives a user other than
// what sshd gives root from localhost (the connection Audit and Harden
// read): a Match User alice with PasswordAuthentication yes keeps her
// password working whatever the rest says.
func (m *Manager) matchOverrides(ctx context.Context, rootEff Effective) ([]Finding, error) {
	users, err := loginUsers(m.passwd())
	if err != nil {
		return nil, err
	}
	var out []Finding
	for _, u := range users {
		if u.name == "root" {
			continue
		}
		eff, err := m.Effective(ctx, u.name)
		if err != nil {
			return nil, err
		}
		for _, s := range Recommended {
			k := strings.ToLower(s.Keyword)
			if k == "permitrootlogin" || eff.Value(k) == rootEff.Value(k) || compliant(k, eff.Value(k)) {
				continue
			}
			out = append(out, Finding{Keyword: s.Keyword, For: u.name, Have: eff.Value(k), Want: s.Value, Why: s.Why,
				Fix: "remove " + s.Keyword + " from the Match block for " + u.name + " in " + m.Paths.Config + " (or a drop-in)"})
		}
	}
	return out, nil
}

// HardenDropIn returns what moat's hardening drop-in holds now, nil when
// there is none: what a hardening would go back to.
func (m *Manager) HardenDropIn() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(m.Paths.DropInDir, hardenDropIn))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	return b, nil
}

// portLines lists the files other than moat's drop-in that set Port.
func (m *Manager) portLines() []string {
	files := []string{m.Paths.Config}
	if more, err := filepath.Glob(filepath.Join(m.Paths.DropInDir, "*.conf")); err == nil {
		files = append(files, more...)
	}
	var out []string
	for _, f := range files {
		if filepath.Base(f) == hardenDropIn {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if fl := strings.Fields(line); len(fl) > 1 && strings.EqualFold(fl[0], "Port") {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// portsIn reads the Port lines of a drop-in of moat's.
func portsIn(content []byte) []int {
	var out []int
	for line := range strings.Lines(string(content)) {
		var p int
		if fl := strings.Fields(line); len(fl) == 2 && fl[0] == "Port" {
			if _, err := fmt.Sscan(fl[1], &p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}
