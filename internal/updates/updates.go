// Package updates sets up unattended security updates: moat's own apt
// drop-ins (the security origins of Debian and Ubuntu, the reboot
// window), the apt timers, and reads back what apt makes of them, when
// it last ran and whether a reboot is pending.
package updates

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The drop-ins moat writes under etc/apt/apt.conf.d, and nothing else.
const (
	// UnattendedFile holds the origins and the reboot settings.
	UnattendedFile = "52moat-unattended-upgrades"
	// PeriodicFile turns the daily runs on; it sorts after Debian's
	// 20auto-upgrades, so it wins over a "0" there.
	PeriodicFile = "20moat-auto-upgrades"
)

// Origins are the security archives of Debian and Ubuntu, as
// unattended-upgrades' Origins-Pattern matches them.
var Origins = []string{
	"origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
	"origin=Debian,codename=${distro_codename},label=Debian-Security",
	"origin=Ubuntu,archive=${distro_codename}-security",
	"origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
	"origin=UbuntuESM,archive=${distro_codename}-infra-security",
}

// Host is the machine whose updates are set up: its root, / for this
// one; a temp root in tests. Systemctl runs systemctl (for the apt
// timers); it is skipped under another root.
type Host struct {
	Root      string
	Systemctl func(ctx context.Context, args ...string) error
}

func (h Host) root() string {
	if h.Root == "" {
		return "/"
	}
	return h.Root
}

func (h Host) path(p string) string { return filepath.Join(h.root(), p) }

func (h Host) confDir() string { return h.path("etc/apt/apt.conf.d") }

// Options are what moat updates enable sets.
type Options struct {
	// RebootWindow is when a reboot that an update needs happens, HH:MM
	// local time; 02:00 when empty.
	RebootWindow string
	// NoReboot leaves reboots to the owner (the server's termination
	// protection is on).
	NoReboot bool
}

var window = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)

// ErrNotInstalled says that unattended-upgrades is missing.
var ErrNotInstalled = errors.New("unattended-upgrades is not installed: moat updates enable --install installs it (apt-get install unattended-upgrades)")

// Installed reports whether unattended-upgrades is there.
func (h Host) Installed() bool {
	_, err := os.Stat(h.path("usr/bin/unattended-upgrade"))
	return err == nil
}

// Content is the unattended-upgrades drop-in for o.
func Content(o Options) []byte {
	reboot, at := "true", o.RebootWindow
	if at == "" {
		at = "02:00"
	}
	if o.NoReboot {
		reboot = "false"
	}
	var b strings.Builder
	b.WriteString("// Written by moat updates enable: change it with moat, not here.\n")
	b.WriteString("Unattended-Upgrade::Origins-Pattern {\n")
	for _, o := range Origins {
		fmt.Fprintf(&b, "\t%q;\n", o)
	}
	b.WriteString("};\n")
	fmt.Fprintf(&b, "Unattended-Upgrade::Automatic-Reboot %q;\n", reboot)
	fmt.Fprintf(&b, "Unattended-Upgrade::Automatic-Reboot-Time %q;\n", at)
	b.WriteString("Unattended-Upgrade::Automatic-Reboot-WithUsers \"false\";\n")
	return []byte(b.String())
}

// periodic turns the daily package lists and upgrades on.
const periodic = `// Written by moat updates enable: change it with moat, not here.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
`

// Enable writes moat's drop-ins and enables the apt timers; it returns
// the files written. unattended-upgrades must be installed.
func (h Host) Enable(ctx context.Context, o Options) ([]string, error) {
	if o.RebootWindow != "" && !window.MatchString(o.RebootWindow) {
		return nil, fmt.Errorf("reboot window %q: write the time as HH:MM, like 02:00", o.RebootWindow)
	}
	if !h.Installed() {
		return nil, ErrNotInstalled
	}
	if err := os.MkdirAll(h.confDir(), 0o755); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	var written []string
	for name, content := range map[string][]byte{UnattendedFile: Content(o), PeriodicFile: []byte(periodic)} {
		p := filepath.Join(h.confDir(), name)
		if err := writeFile(p, content); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	slices.Sort(written)
	if h.root() == "/" {
		systemctl := h.Systemctl
		if systemctl == nil {
			systemctl = runSystemctl
		}
		if err := systemctl(ctx, "enable", "--now", "apt-daily.timer", "apt-daily-upgrade.timer"); err != nil {
			return written, fmt.Errorf("updates: the apt timers: %w", err)
		}
	}
	return written, nil
}

// writeFile replaces a file whole: a half-written apt drop-in would stop
// every apt command.
func writeFile(p string, content []byte) error {
	tmp := p + ".moat-tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("updates: %w", err)
	}
	return nil
}

// Refresh rewrites the unattended-upgrades drop-in for o when moat's
// updates are on (the server's protection changed); nothing otherwise.
func (h Host) Refresh(o Options) error {
	p := filepath.Join(h.confDir(), UnattendedFile)
	old, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	if o.RebootWindow == "" {
		if m := regexp.MustCompile(`Automatic-Reboot-Time "([0-9:]+)"`).FindSubmatch(old); m != nil {
			o.RebootWindow = string(m[1])
		}
	}
	return writeFile(p, Content(o))
}

// Disable removes moat's drop-ins, and nothing else; it returns the files
// removed.
func (h Host) Disable() ([]string, error) {
	var removed []string
	for _, name := range []string{PeriodicFile, UnattendedFile} {
		p := filepath.Join(h.confDir(), name)
		err := os.Remove(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("updates: %w", err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

func runSystemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Status is what apt makes of the settings, and how the updates went.
type Status struct {
	Installed bool `json:"installed"`
	// Enabled says that moat's drop-ins are there; Periodic that apt
	// runs unattended-upgrade daily (APT::Periodic::Unattended-Upgrade).
	Enabled  bool `json:"enabled"`
	Periodic bool `json:"periodic"`
	// Origins are the origin patterns apt reads; Security that one is a
	// security archive's.
	Origins  []string `json:"origins"`
	Security bool     `json:"security"`
	// Reboot, RebootTime and RebootWithUsers are the reboot settings as
	// apt reads them.
	Reboot          bool   `json:"reboot"`
	RebootTime      string `json:"reboot_time,omitempty"`
	RebootWithUsers bool   `json:"reboot_with_users"`
	// RebootRequired says an update asked for a reboot, RebootPackages
	// which.
	RebootRequired bool     `json:"reboot_required"`
	RebootPackages []string `json:"reboot_packages,omitempty"`
	// LastRun is when unattended-upgrades last ran (from its log), and
	// LastInstalled what it installed then.
	LastRun       time.Time `json:"last_run,omitzero"`
	LastInstalled []string  `json:"last_installed,omitempty"`
	// KernelRunning is the kernel that runs (uname -r), KernelInstalled
	// the newest in /boot or /lib/modules; they differ until a reboot.
	KernelRunning   string `json:"kernel_running,omitempty"`
	KernelInstalled string `json:"kernel_installed,omitempty"`
	// SecurityPending are the security updates not installed yet, as
	// "name installed → newer" (SecurityPending's).
	SecurityPending []string `json:"security_pending,omitempty"`
}

// Read reads the status: apt's configuration through apt-config dump (the
// real apt, pointed at the root), the reboot-required files, the log.
func (h Host) Read(ctx context.Context) (Status, error) {
	s := Status{Installed: h.Installed()}
	_, err := os.Stat(filepath.Join(h.confDir(), UnattendedFile))
	s.Enabled = err == nil
	conf, err := h.dump(ctx)
	if err != nil {
		return s, err
	}
	s.Periodic = conf["APT::Periodic::Unattended-Upgrade"] == "1" || conf["APT::Periodic::Unattended-Upgrade"] == "always"
	s.Origins = lists(conf, "Unattended-Upgrade::Origins-Pattern::")
	for _, o := range s.Origins {
		if strings.Contains(o, "security") || strings.Contains(o, "Security") {
			s.Security = true
		}
	}
	s.Reboot = conf["Unattended-Upgrade::Automatic-Reboot"] == "true" || conf["Unattended-Upgrade::Automatic-Reboot"] == "1"
	s.RebootTime = conf["Unattended-Upgrade::Automatic-Reboot-Time"]
	s.RebootWithUsers = conf["Unattended-Upgrade::Automatic-Reboot-WithUsers"] == "true"
	if _, err := os.Stat(h.path("var/run/reboot-required")); err == nil {
		s.RebootRequired = true
		b, _ := os.ReadFile(h.path("var/run/reboot-required.pkgs"))
		s.RebootPackages = strings.Fields(string(b))
	}
	s.LastRun, s.LastInstalled = lastRun(h.path("var/log/unattended-upgrades/unattended-upgrades.log"))
	s.KernelRunning, s.KernelInstalled = h.kernels()
	if _, err := os.Stat(h.path("var/lib/dpkg/status")); err == nil {
		if s.SecurityPending, err = h.SecurityPending(ctx); err != nil {
			return s, err
		}
	}
	return s, nil
}

// kernels are the running kernel's release and the newest installed one
// (empty when none is found: a container's host has them).
func (h Host) kernels() (running, newest string) {
	b, _ := os.ReadFile(h.path("proc/sys/kernel/osrelease"))
	running = strings.TrimSpace(string(b))
	var found []string
	if vs, _ := filepath.Glob(h.path("boot/vmlinuz-*")); len(vs) > 0 {
		for _, v := range vs {
			found = append(found, strings.TrimPrefix(filepath.Base(v), "vmlinuz-"))
		}
	} else if ms, _ := os.ReadDir(h.path("lib/modules")); len(ms) > 0 {
		for _, m := range ms {
			found = append(found, m.Name())
		}
	}
	slices.SortFunc(found, compareVersions)
	if len(found) > 0 {
		newest = found[len(found)-1]
	}
	return running, newest
}

// compareVersions orders kernel releases like 6.1.0-28-amd64: the runs
// of digits as numbers, the rest as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		if da != "" && db != "" {
			if len(da) != len(db) {
				return len(da) - len(db)
			}
			if c := strings.Compare(da, db); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return strings.TrimLeft(s[:i], "0"), s[i:]
}

// dump runs apt-config dump under the root: APT_CONFIG names a file that
// sets Dir, since apt reads its parts before any -o.
func (h Host) dump(ctx context.Context) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "apt-config", "dump")
	if h.root() != "/" {
		f, err := os.CreateTemp("", "moat-apt-*.conf")
		if err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
		defer os.Remove(f.Name())
		fmt.Fprintf(f, "Dir %q;\n", strings.TrimSuffix(h.root(), "/")+"/")
		f.Close()
		cmd.Env = append(os.Environ(), "APT_CONFIG="+f.Name())
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("updates: apt-config dump: %w", err)
	}
	conf := map[string]string{}
	n := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v = strings.TrimSuffix(strings.TrimSpace(v), ";")
		v = strings.Trim(v, `"`)
		if strings.HasSuffix(k, "::") { // a list's element: numbered
			i := n[k]
			n[k]++
			k = fmt.Sprintf("%s%d", k, i)
		}
		conf[k] = v
	}
	return conf, sc.Err()
}

// lists returns a list's elements from a dump, in order.
func lists(conf map[string]string, prefix string) []string {
	var out []string
	for i := 0; ; i++ {
		v, ok := conf[fmt.Sprintf("%s%d", prefix, i)]
		if !ok {
			return out
		}
		out = append(out, v)
	}
}

var logLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO (.*)$`)

// lastRun reads unattended-upgrades' log: the time of its last line, and
// the packages of its last "Packages that will be upgraded".
func lastRun(path string) (time.Time, []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, nil
	}
	var at time.Time
	var pkgs []string
	for _, line := range strings.Split(string(b), "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if t, err := time.ParseInLocation("2006-01-02 15:04:05", m[1], time.Local); err == nil {
			at = t
		}
		if rest, ok := strings.CutPrefix(m[2], "Packages that will be upgraded: "); ok {
			pkgs = strings.Fields(rest)
		}
	}
	return at, pkgs
}
